"""Benchmark in one process what the gateway's own code spends on a stream, against the relay's.

First, with no network and no server: the chunked stream bench/stream_upstream.py sends, its
server-sent events read from memory one event per socket read (as a stream of
deltas some time apart arrives), through the same http.client, urllib3 and requests
objects a real call reads through. Each row consumes it to the end:

- the barest relay (bench/barest_proxy.py): requests' iter_content(None), the bytes
  passed on as they come;
- the gateway, passed through: streams.sse() over streams.passthrough(), a Responses
  API stream (groq's reader), each event parsed, followed and framed;
- the gateway, translated: streams.sse() over streams.translated(), a Chat Completions
  stream turned into Responses events.

No store (store: false), under gevent as in gunicorn's worker. What is left out is
what both pay alike, or what differs only under load: waiting on the socket, the
greenlet switches between the pump and the request, and gunicorn's write to the
client.

Then a stream's fixed cost: whole streams of one delta from a provider on 127.0.0.1
(bench/stream_upstream.py, a process of its own), through each Flask app's test client
in this process (no gunicorn), the gateway on a SQLite store as it runs, and with
`store: false` (no store write, no marshmallow load before one). Rows run in
turn in every round; figures are medians of the rounds.

Usage: python bench/per_event.py [--rounds 7] [--events 20000] [--streams 300] [--out FILE]
Writes docs/benchmarks-per-event.md. Not a test; never runs in CI.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import http.client  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

import requests  # noqa: E402
import urllib3  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import streams  # noqa: E402
from app import create_app  # noqa: E402
from run import free_port, start, stop  # noqa: E402
from stream_upstream import chat_events, frame, responses_events  # noqa: E402
from providers.streaming import ChatReader, Generation, ResponsesReader  # noqa: E402

HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")
UPSTREAM = types.SimpleNamespace(name="groq", read_timeout=20.0)


def provider_stream(events, count):
    """The chunks bench/stream_upstream.py sends for a stream of `count` deltas, one a read."""
    return [frame(event, n) for n, (event, _) in enumerate(events(count))]


class Pieces(io.RawIOBase):
    """A socket's reads: one piece each, as a stream arrives an event at a time."""

    def __init__(self, pieces):
        self.pieces, self.rest = iter(pieces), b""

    def readable(self):
        return True

    def readinto(self, buffer):
        piece = self.rest or next(self.pieces, b"")
        piece, self.rest = piece[:len(buffer)], piece[len(buffer):]
        buffer[:len(piece)] = piece
        return len(piece)


class Socket:
    """What http.client reads a response from: a socket's makefile(), over Pieces."""

    def __init__(self, pieces):
        self.pieces = pieces

    def makefile(self, mode):
        return io.BufferedReader(Pieces(self.pieces))


def opened(events):
    """A requests Response over the chunks of `events` (provider_stream), open to read."""
    pieces = [HEAD, *events, b"0\r\n\r\n"]
    answer = http.client.HTTPResponse(Socket(pieces), method="POST")
    answer.begin()
    resp = requests.Response()
    resp.status_code = 200
    resp.raw = urllib3.HTTPResponse(body=answer, headers=dict(answer.getheaders()), status=200,
                                    preload_content=False, decode_content=False,
                                    original_response=answer)
    return resp


def relay(events):
    for _ in opened(events).iter_content(None):
        pass


def passed_through(events):
    generation = Generation(UPSTREAM, "responses", None, ResponsesReader(UPSTREAM, "r", "bench"))
    generation._resp = opened(events)
    for _ in streams.sse(streams.passthrough(generation, "groq", None), lambda: None):
        pass


def translated(events):
    generation = Generation(UPSTREAM, "chat/completions", None,
                            ChatReader(UPSTREAM, "resp_1", "bench"))
    generation._resp = opened(events)
    for _ in streams.sse(streams.translated(generation, "anthropic", None), lambda: None):
        pass


ROWS = [("barest relay, a Responses API stream", relay, responses_events),
        ("barest relay, a Chat Completions stream", relay, chat_events),
        ("gateway, passed through", passed_through, responses_events),
        ("gateway, translated", translated, chat_events)]


def whole_streams(rounds, count):
    """{row: CPU ms per stream of one delta}, each stream whole through an app's test client."""
    port = free_port()
    provider = start([sys.executable, str(ROOT / "bench" / "stream_upstream.py"), str(port),
                      "1", "0"], port)
    base = f"http://127.0.0.1:{port}/v1"
    os.environ.update(OPENAI_BASE_URL=base, STREAM_BASE_URL=base, GATEWAY_API_KEYS="bench",
                      OPENAI_API_KEY="sk-bench")
    import barest_proxy  # reads the variables above as it is imported

    store = Path(tempfile.mkdtemp(prefix="bench-store-")) / "gateway.sqlite3"
    gateway = create_app({"GATEWAY_API_KEYS": "bench", "GROQ_API_KEY": "gsk-bench",
                          "GROQ_BASE_URL": base, "ANTHROPIC_API_KEY": "sk-ant-bench",
                          "ANTHROPIC_BASE_URL": base,
                          "STORE_URL": f"sqlite:///{store}"}).test_client()
    relay = barest_proxy.app.test_client()
    responses = {"model": "deltas-1", "input": "x", "stream": True}
    chat = {"model": "deltas-1", "messages": [{"role": "user", "content": "x"}],
            "stream": True}
    rows = {"barest relay, a Responses API stream": (relay, "/v1/responses", responses),
            "barest relay, a Chat Completions stream": (relay, "/v1/chat/completions", chat),
            "gateway, passed through": (gateway, "/v1/responses",
                                        {**responses, "model": "groq/deltas-1"}),
            "gateway, translated": (gateway, "/v1/responses",
                                    {**responses, "model": "anthropic/deltas-1"}),
            "gateway, passed through, store: false": (
                gateway, "/v1/responses", {**responses, "model": "groq/deltas-1",
                                           "store": False}),
            "gateway, translated, store: false": (
                gateway, "/v1/responses", {**responses, "model": "anthropic/deltas-1",
                                           "store": False})}
    timings = {name: [] for name in rows}
    try:
        for _ in range(rounds):
            for name, (client, path, body) in rows.items():
                started = time.process_time()
                for _ in range(count):
                    answer = client.post(path, json=body,
                                         headers={"Authorization": "Bearer bench"})
                    assert answer.status_code == 200 and b"delta" in answer.data, answer.data
                timings[name].append((time.process_time() - started) / count)
    finally:
        stop(provider)
    return {name: statistics.median(each) for name, each in timings.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--streams", type=int, default=300, help="streams a row, each round")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-per-event.md")
    args = parser.parse_args()
    streams_of = {make: provider_stream(make, args.events) for _, _, make in ROWS}
    timings = {name: [] for name, _, _ in ROWS}
    for _ in range(args.rounds):
        for name, consume, make in ROWS:
            started = time.process_time()
            consume(streams_of[make])
            timings[name].append((time.process_time() - started) / len(streams_of[make]))
    rows = "\n".join(f"| {name} | {1e6 * statistics.median(per_event):.1f} |"
                     for name, per_event in timings.items())
    per_stream = "\n".join(f"| {name} | {1e3 * cpu:.2f} |"
                           for name, cpu in whole_streams(args.rounds, args.streams).items())
    args.out.write_text(REPORT.format(events=args.events, rounds=args.rounds, rows=rows,
                                      streams=args.streams, per_stream=per_stream,
                                      when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    print(rows, per_stream, sep="\n")


REPORT = """# A stream's CPU in one process: the gateway's code against the relay's

`python bench/per_event.py --rounds {rounds}` ({when}; the script says what each row
reads and what it leaves out): one process, no network, no server; a provider's chunked
stream of {events:,} deltas read from memory one event per socket read, through the same
http.client, urllib3 and requests objects a real call reads through, under gevent, with no
store. Medians of {rounds} interleaved rounds.

| row | CPU per event, µs |
| --- | ---: |
{rows}

And whole streams of one delta, {streams} a row in each round, through each app's test client
in this process (no gunicorn; the provider in a process of its own), the gateway on a SQLite
store, and with `store: false` (no store write, and no marshmallow load before one):

| row | CPU per stream, ms |
| --- | ---: |
{per_stream}

What it tells: [performance.md](performance.md).
"""


if __name__ == "__main__":
    main()
