"""Benchmark the gateway's own cost on a stream against the barest relay of the same stack.

The floor: bench/barest_proxy.py, Flask and requests under the same gunicorn gevent
worker (2 workers, 4,000 connections each), relaying the provider's bytes and doing
nothing else. Against it, the gateway as the Procfile starts it, translating a Chat
Completions stream (anthropic) and passing a Responses API stream through (groq), each
beside the provider taken directly and the relay of the same kind of stream. The
provider (bench/stream_upstream.py) streams 20 deltas 0.5 s apart; clients (a process
of their own) open their streams over 2 s. Every row runs in every round, in turn
(interleaved); figures are medians of the rounds, and ratios are taken within a round's
median row: CPU seconds per 1,000 deltas of the server's whole tree, first-delta p99
over direct, completed streams, peak PSS.

With --before PATH, the gateway from another checkout gets the same streams, interleaved.

Usage: python bench/overhead.py [--rounds 2] [--sizes 1000,2000] [--before CHECKOUT]
Writes docs/benchmarks-overhead.md and .json. Not a test; never runs in CI.
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from concurrency import DELTAS, INTERVAL, gateway, measure_row, relay  # noqa: E402
from run import BENCH, free_port, start, stop  # noqa: E402

CHAT = {"model": "bench", "messages": [{"role": "user", "content": "x"}], "stream": True}
RESPONSES = {"model": "bench", "input": "x", "stream": True}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", default="1000,2000")
    parser.add_argument("--before", help="another checkout whose gateway streams too")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-overhead-")
    up_port = free_port()
    upstream = start([sys.executable, str(BENCH / "stream_upstream.py"), str(up_port),
                      str(DELTAS), str(INTERVAL)], up_port)
    up_url = f"http://127.0.0.1:{up_port}"
    (relay_proc, relay_url), (gw_proc, gw_url) = relay(up_url), gateway(up_port, tmp)
    gateways = {"gateway": (gw_proc, gw_url)}
    if args.before:
        gateways["gateway before"] = gateway(up_port, tmp, root=Path(args.before))
    translated = {**RESPONSES, "model": "anthropic/bench"}
    passed = {**RESPONSES, "model": "groq/bench"}
    rows = {
        "direct, Chat": (None, up_url, "/v1/chat/completions", CHAT),
        "barest relay, Chat": (relay_proc, relay_url, "/v1/chat/completions", CHAT),
        **{f"{name}, translated": (proc, url, "/v1/responses", translated)
           for name, (proc, url) in gateways.items()},
        "direct, Responses": (None, up_url, "/v1/responses", RESPONSES),
        "barest relay, Responses": (relay_proc, relay_url, "/v1/responses", RESPONSES),
        **{f"{name}, passed through": (proc, url, "/v1/responses", passed)
           for name, (proc, url) in gateways.items()},
    }
    results = {}
    try:
        for round_ in range(args.rounds):
            for size in [int(s) for s in args.sizes.split(",")]:
                for name, (proc, url, path, body) in rows.items():  # interleaved
                    row = measure_row(proc, url, path, body, size)
                    print(json.dumps({"round": round_, "size": size, "row": name, **row}),
                          flush=True)
                    results.setdefault(f"{size}|{name}", []).append(row)
    finally:
        for proc in (relay_proc, *(proc for proc, _ in gateways.values()), upstream):
            stop(proc)
    report(results, args)


def report(results, args):
    med = {key: {field: statistics.median(r[field] for r in rows) for field in rows[0]}
           for key, rows in results.items()}
    lines = ["# The gateway's own cost on a stream, against the barest relay",
             "", f"`python bench/overhead.py --rounds {args.rounds} --sizes {args.sizes}"
             f"{' --before CHECKOUT' if args.before else ''}` "
             "(see its docstring for the set-up); medians of the rounds, interleaved.", "",
             "| streams | row | completed | first delta p99 over direct | CPU s per 1,000 "
             "deltas | peak PSS |", "| --- | --- | --- | --- | --- | --- |"]
    ratios = []
    for key, row in med.items():
        size, name = key.split("|")
        kind = "Chat" if "Chat" in name or "translated" in name else "Responses"
        direct = med[f"{size}|direct, {kind}"]["p99"]
        over = (row["p99"] - direct) * 1000
        pss = "" if row["pss"] != row["pss"] else f"{row['pss'] / 2**20:.0f} MB"
        cpu = "" if name.startswith("direct") else f"{row['cpu_per_1k']:.3f}"
        lines.append(f"| {size} | {name} | {row['completed']:.0f} | "
                     f"{'' if name.startswith('direct') else f'+{over:.0f} ms'} | {cpu} | {pss} |")
        if name.startswith("gateway"):
            floor = med[f"{size}|barest relay, {kind}"]
            floor_over = (floor["p99"] - direct) * 1000
            ratios.append(f"- {size} streams, {name}: CPU per delta "
                          f"{row['cpu_per_1k'] / floor['cpu_per_1k']:.2f}x the relay's; "
                          f"first-delta p99 over direct {over:.0f} ms against {floor_over:.0f}"
                          " ms")
    lines += ["", "## Against the floor", "", *ratios, ""]
    (ROOT / "docs" / "benchmarks-overhead.md").write_text("\n".join(lines))
    (ROOT / "docs" / "benchmarks-overhead.json").write_text(json.dumps(med, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
