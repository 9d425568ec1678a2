"""A provider that streams slowly to thousands of clients at once, and says when each stream
opened and when its client closed it: asyncio, chunked, keep-alive (a connection idle for
IDLE seconds is closed, as servers do, so a burst after a pause opens new connections).

POST /v1/chat/completions streams Chat Completions chunks; POST /v1/responses streams
Responses API events: DELTAS deltas, INTERVAL seconds apart (the first after one
INTERVAL), then the ending. The model name `long` streams 1,000 deltas instead, for runs
that are cancelled, and `deltas-<n>` n deltas. A client closing its connection is seen at once (its FIN), not at the
next write. GET /stats answers {"opened": {input: t}, "closed": {input: t}, "finished": n},
times from time.time(); POST /reset forgets them.

Usage: python bench/stream_upstream.py PORT [DELTAS] [INTERVAL] [CERT KEY]
With CERT and KEY (PEM files), it serves HTTPS.
"""

import asyncio
import json
import ssl
import sys
import time

STATS = {"opened": {}, "closed": {}, "finished": 0}
IDLE = 2.0  # seconds a kept-alive connection may wait for its next request


def chat_events(deltas):
    def chunk(delta, finish=None):
        return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "bench",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""}), False
    for i in range(deltas):
        yield chunk({"content": f"w{i} "}), True
    yield chunk({}, "stop"), False
    yield {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
           "usage": {"prompt_tokens": 2, "completion_tokens": deltas,
                     "total_tokens": deltas + 2}}, False
    yield "[DONE]", False


def responses_events(deltas):
    base = {"id": "resp_bench", "object": "response", "model": "bench"}
    item = {"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress",
            "content": []}
    yield {"type": "response.created", "response": {**base, "status": "in_progress"}}, False
    yield {"type": "response.output_item.added", "output_index": 0, "item": item}, False
    yield {"type": "response.content_part.added", "output_index": 0, "content_index": 0,
           "part": {"type": "output_text", "text": ""}}, False
    for i in range(deltas):
        yield {"type": "response.output_text.delta", "output_index": 0, "content_index": 0,
               "delta": f"w{i} "}, True
    text = "".join(f"w{i} " for i in range(deltas))
    done = {**item, "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}
    yield {"type": "response.output_item.done", "output_index": 0, "item": done}, False
    yield {"type": "response.completed", "response": {
        **base, "status": "completed", "output": [done],
        "usage": {"input_tokens": 2, "output_tokens": deltas, "total_tokens": deltas + 2}}}, False


def frame(event, sequence):
    if event == "[DONE]":
        data = b"data: [DONE]\n\n"
    elif "type" in event:
        event = {**event, "sequence_number": sequence}
        data = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
    else:
        data = f"data: {json.dumps(event)}\n\n".encode()
    return b"%x\r\n%s\r\n" % (len(data), data)


async def serve(reader, writer, deltas, interval):
    """Answer requests on one connection until the client closes it."""
    buffer, next_read = b"", None
    try:
        while True:
            while b"\r\n\r\n" not in buffer:
                try:
                    data = await asyncio.wait_for(next_read or reader.read(65536), IDLE)
                except TimeoutError:
                    return  # idle too long: closed (finally)
                next_read = None
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            request_line, *lines = head.decode("latin-1").split("\r\n")
            length = next((int(v) for n, _, v in (line.partition(":") for line in lines)
                           if n.strip().lower() == "content-length"), 0)
            while len(buffer) < length:
                data = await reader.read(65536)
                if not data:
                    return
                buffer += data
            body, buffer = json.loads(buffer[:length] or b"{}"), buffer[length:]
            path = request_line.split(" ")[1]
            if path == "/stats":
                await respond(writer, json.dumps(STATS).encode())
                continue
            if path == "/reset":
                STATS.update(opened={}, closed={}, finished=0)
                await respond(writer, b"{}")
                continue
            key = body["input"] if "input" in body else body["messages"][-1]["content"]
            count = _count(body.get("model"), deltas)
            events = chat_events(count) if path.endswith("/chat/completions") \
                else responses_events(count)
            STATS["opened"][key] = time.time()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            # The next read is the client's next request, or its FIN if it leaves first.
            next_read = asyncio.ensure_future(reader.read(65536))
            for sequence, (event, is_delta) in enumerate(events):
                if is_delta:
                    await asyncio.wait({next_read}, timeout=interval)
                if next_read.done():
                    data = next_read.result()
                    if not data:
                        STATS["closed"][key] = time.time()
                        return
                    buffer, next_read = buffer + data, asyncio.ensure_future(reader.read(65536))
                writer.write(frame(event, sequence))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            STATS["finished"] += 1
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        if next_read is not None:
            next_read.cancel()
        writer.close()


def _count(model, default):
    """How many deltas a stream for `model` has: 1,000 for `long`, n for `deltas-<n>`."""
    if model == "long":
        return 1000
    if isinstance(model, str) and model.startswith("deltas-"):
        return int(model.removeprefix("deltas-"))
    return default


async def respond(writer, body):
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()


async def main(port, deltas, interval, cert=None, key=None):
    tls = None
    if cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
    server = await asyncio.start_server(lambda r, w: serve(r, w, deltas, interval),
                                        "127.0.0.1", port, backlog=4096, ssl=tls)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    arguments = sys.argv[1:4] + [20, 0.25][len(sys.argv[1:4]) - 1:]
    asyncio.run(main(int(arguments[0]), int(arguments[1]), float(arguments[2]), *sys.argv[4:6]))
