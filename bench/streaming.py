"""Benchmark streaming create: time to the first text delta, and to the end, through the
gateway (the Procfile's gunicorn) against the same stream taken directly from the provider.

Two kinds of stream: a Responses API provider, whose events the gateway passes through,
and a Chat-only one, whose chunks it translates. The provider (tests/fake_streaming.py)
sends 20 deltas 5 ms apart. Rows are interleaved round by round; medians of the rounds.
Writes docs/benchmarks-streaming.md. Not a test; never runs in CI.

    python bench/streaming.py [--rounds 3] [--streams 50]
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
from gateway_process import run_gateway  # noqa: E402

KEY = "bench-key"
MODEL = "words-20-5"


def rows(direct, gateway):
    """(name, URL, body, what marks a text delta in the stream) for each row."""
    responses = {"model": MODEL, "input": "x", "stream": True}
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "stream": True}
    return [
        ("Responses API, direct", f"{direct}/responses", responses, b"output_text.delta"),
        ("Responses API, through the gateway (groq, passed through)",
         f"{gateway}/v1/responses", {**responses, "model": f"groq/{MODEL}"}, b"output_text.delta"),
        ("Chat Completions, direct", f"{direct}/chat/completions", chat, b'"content": "w'),
        ("Chat Completions, through the gateway (anthropic, translated)",
         f"{gateway}/v1/responses", {**responses, "model": f"anthropic/{MODEL}"},
         b"output_text.delta"),
    ]


def one(url, body, marker):
    """Milliseconds to the first delta, and to the end of the stream."""
    start = time.perf_counter()
    first = None
    with requests.post(url, json=body, stream=True, timeout=30,
                       headers={"Authorization": f"Bearer {KEY}"}) as resp:
        for line in resp.iter_lines():
            if first is None and marker in line:
                first = time.perf_counter()
    return (first - start) * 1000, (time.perf_counter() - start) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=50)
    args = parser.parse_args()
    results = {}
    with FakeStreamingProvider() as provider, \
            run_gateway(tempfile.mkdtemp(), GATEWAY_API_KEYS=KEY, GROQ_API_KEY="gsk-bench",
                        GROQ_BASE_URL=provider.base_url, ANTHROPIC_API_KEY="sk-ant-bench",
                        ANTHROPIC_BASE_URL=provider.base_url) as gateway:
        for _ in range(args.rounds):
            for concurrency in (1, 8):
                for name, url, body, marker in rows(provider.base_url, gateway.url):
                    with ThreadPoolExecutor(concurrency) as pool:
                        timings = list(pool.map(lambda _: one(url, body, marker),
                                                range(args.streams)))
                    firsts = sorted(t[0] for t in timings)
                    results.setdefault((name, concurrency), []).append((
                        statistics.median(firsts), firsts[int(0.99 * (len(firsts) - 1))],
                        statistics.median(t[1] for t in timings)))
    report(results, args)


def report(results, args):
    lines = [
        "# Streaming create: time to first delta, through the gateway and direct",
        "",
        f"`python bench/streaming.py --rounds {args.rounds} --streams {args.streams}`: "
        f"{args.streams} streams per row and concurrency, 20 deltas 5 ms apart from a "
        "provider on 127.0.0.1 (a Python server in the benchmark's process), the gateway "
        "as the Procfile starts it (2 workers). Medians of the rounds; rows interleaved "
        "in one run.",
        "",
        "| stream | concurrency | first delta p50 ms | first delta p99 ms | whole stream p50 ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (name, concurrency), runs in sorted(results.items(), key=lambda kv: (kv[0][1],)):
        p50, p99, whole = (statistics.median(r[i] for r in runs) for i in range(3))
        lines.append(f"| {name} | {concurrency} | {p50:.1f} | {p99:.1f} | {whole:.1f} |")
    out = ROOT / "docs" / "benchmarks-streaming.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
