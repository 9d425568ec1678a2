"""A provider that answers every cancel after 50 ms, without blocking: asyncio, keep-alive.

It models a real provider's latency while never being the bottleneck itself.
Usage: python bench/slow_upstream.py PORT [DELAY_SECONDS]
"""

import asyncio
import json
import sys

BODY = {"object": "response", "created_at": 1741476542, "status": "cancelled",
        "model": "gpt-4o-mini", "output": [],
        "usage": {"input_tokens": 12, "output_tokens": 0, "total_tokens": 12}}


async def serve(reader, writer, delay):
    """Answer requests on one connection until the client closes it."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            path = request_line.split(" ")[1]
            response_id = path.split("/")[3] if path.count("/") >= 4 else "unknown"
            await asyncio.sleep(delay)
            body = json.dumps({"id": response_id, **BODY}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port, delay):
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, delay), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.05))
