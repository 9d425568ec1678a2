"""Benchmark background create and cancel: forwarded to a native-cancel provider, against run
by the gateway at a Chat-only provider, through the Procfile's gunicorn, in one run.

Each lifecycle: create (background), wait until it is running (gateway runs: output
visible), cancel. Rows are interleaved round by round and reported as medians of the
rounds; the gateway's CPU is read from /proc for its whole process tree. For gateway runs
it also reports how long after the cancel answered the provider saw its stream closed.
Writes docs/benchmarks-background.md. Not a test; never runs in CI.

    python bench/background.py [--rounds 3] [--lifecycles 100] [--concurrency 8]
"""

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from fake_streaming import FakeStreamingProvider  # noqa: E402
from fake_upstream import FakeProvider  # noqa: E402
from gateway_process import run_gateway  # noqa: E402

KEY = "bench-key"
ROWS = {"native (openai, forwarded)": "openai/gpt-4o-mini",
        "gateway-run (anthropic, translated)": "anthropic/words-2000-10"}


def lifecycle(url, model, key, streamer):
    """One create, wait until running, cancel; its timings in ms."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {KEY}"
    t0 = time.perf_counter()
    created = session.post(f"{url}/v1/responses", json={"model": model, "input": key,
                                                        "background": True}).json()
    t1 = time.perf_counter()
    polls = 0
    if model.startswith("anthropic/"):
        while True:
            polls += 1
            if session.get(f"{url}/v1/responses/{created['id']}").json()["output"]:
                break
            time.sleep(0.1)
    t2, sent = time.perf_counter(), time.monotonic()  # the fake stamps with monotonic()
    cancelled = session.post(f"{url}/v1/responses/{created['id']}/cancel").json()
    t3 = time.perf_counter()
    assert cancelled["status"] == "cancelled", cancelled
    closed = None
    if model.startswith("anthropic/"):
        stream = streamer.wait_for(key, lambda s: s.client_left, seconds=5)
        closed = (stream.gone_at - sent) * 1000
    return (t1 - t0) * 1000, (t3 - t2) * 1000, closed, polls


def cpu_seconds(pid):
    """User + system CPU of a process and its children (the gunicorn tree)."""
    pids = [pid] + [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    ticks = 0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / 100


def p(values, q):
    values = sorted(v for v in values if v is not None)
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lifecycles", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    results = {name: [] for name in ROWS}
    with FakeStreamingProvider() as streamer, FakeProvider() as native, \
            run_gateway(tempfile.mkdtemp(), GATEWAY_API_KEYS=KEY, OPENAI_API_KEY="sk-bench",
                        OPENAI_BASE_URL=native.base_url, ANTHROPIC_API_KEY="sk-ant-bench",
                        ANTHROPIC_BASE_URL=streamer.base_url) as gateway:
        for round_ in range(args.rounds):
            for name, model in ROWS.items():  # interleaved: each round measures every row
                keys = [f"bench-{round_}-{name[:6]}-{i}" for i in range(args.lifecycles)]
                cpu0, wall0 = cpu_seconds(gateway.proc.pid), time.perf_counter()
                with ThreadPoolExecutor(args.concurrency) as pool:
                    timings = list(pool.map(
                        lambda k, m=model: lifecycle(gateway.url, m, k, streamer), keys))
                cpu = cpu_seconds(gateway.proc.pid) - cpu0
                results[name].append({
                    "create_p50": p([t[0] for t in timings], 0.5),
                    "create_p99": p([t[0] for t in timings], 0.99),
                    "cancel_p50": p([t[1] for t in timings], 0.5),
                    "cancel_p99": p([t[1] for t in timings], 0.99),
                    "closed_p99": p([t[2] for t in timings], 0.99),
                    "cpu_ms": cpu / args.lifecycles * 1000,
                    "polls": statistics.mean(t[3] for t in timings),
                    "wall_s": time.perf_counter() - wall0,
                })
    report(results, args)


def report(results, args):
    def median(name, key):
        values = [r[key] for r in results[name] if r[key] is not None]
        return f"{statistics.median(values):.1f}" if values else "—"

    lines = [
        "# Background create and cancel: native against gateway-run",
        "",
        f"`python bench/background.py --rounds {args.rounds} --lifecycles {args.lifecycles} "
        f"--concurrency {args.concurrency}`: each lifecycle is a background create, a wait "
        "until it runs (for gateway runs: until output is visible), and a cancel, through "
        "the Procfile's gunicorn (2 workers) on the SQLite store. Medians of the rounds, "
        "rows interleaved in one run; CPU is the gateway's whole process tree per "
        "lifecycle. The native provider answers at once (a Python server in the benchmark's "
        "process, so its row includes that round trip); the Chat-only one streams a word "
        "every 10 ms until it is stopped. A gateway run's lifecycle also holds the "
        "retrieves that wait for its output (polled every 100 ms; its first progress "
        "write comes 0.5 s in) and the reading of its stream: its CPU is the whole run's, "
        "not one request's.",
        "",
        "| row | create p50 ms | create p99 ms | cancel p50 ms | cancel p99 ms | "
        "provider saw its stream closed, p99 ms after the cancel was sent | "
        "retrieves per lifecycle | gateway CPU ms per lifecycle |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ROWS:
        lines.append(f"| {name} | " + " | ".join(median(name, k) for k in (
            "create_p50", "create_p99", "cancel_p50", "cancel_p99", "closed_p99", "polls",
            "cpu_ms"))
            + " |")
    out = ROOT / "docs" / "benchmarks-background.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
