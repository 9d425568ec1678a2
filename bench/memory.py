"""Benchmark what gc.freeze() in gunicorn.conf.py saves: the gateway's memory, as the
Procfile starts it, against the same gateway with the pre_fork hook taken out.

Each round starts both gateways anew and, in turn (interleaved), measures the whole
process tree's PSS: idle; its peak while 2,000 streams run (bench/concurrency.py's provider and
clients: 20 deltas 0.5 s apart, opened over 2 s); after 2,000 gateway runs created and
cancelled at once; and its peak with 2,000 streams again, as a long-lived instance holds
them. Medians of the rounds.

Usage: python bench/memory.py [--rounds 3]
Writes docs/benchmarks-memory.md. Not a test; never runs in CI.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from concurrency import DELTAS, INTERVAL, RUNS, gateway, measure_row, measure_runs  # noqa: E402
from run import BENCH, free_port, memory_bytes, start, stop, tree  # noqa: E402

STREAMS = 2000
STAGES = ("idle", f"{STREAMS:,} streams (peak)", f"after {RUNS:,} runs",
          f"{STREAMS:,} streams again (peak)")


def unfrozen_config(tmp):
    """gunicorn.conf.py as it is, less its pre_fork hook (gc.freeze)."""
    path = Path(tmp) / "unfrozen.conf.py"
    path.write_text(f"exec(compile(open({str(ROOT / 'gunicorn.conf.py')!r}).read(), "
                    "'gunicorn.conf.py', 'exec'))\ndel pre_fork\n")
    return path


def pss_mb(proc):
    return memory_bytes(tree(proc.pid))[1] / 2**20


def streams_pss(proc, url):
    """The tree's peak PSS while 2,000 streams run (measure_row samples it), and how many
    of them did not complete."""
    row = measure_row(proc, url, "/v1/responses", {"model": "groq/bench", "input": "x",
                                                   "stream": True}, STREAMS)
    return row["pss"] / 2**20, STREAMS - row["completed"]


def round_(up_port, tmp):
    up_url = f"http://127.0.0.1:{up_port}"
    servers = {"gc.freeze() (as shipped)": gateway(up_port, tmp),
               "no gc.freeze()": gateway(up_port, tmp, flags=f"-c {unfrozen_config(tmp)}")}
    try:
        figures = {name: {"idle": pss_mb(proc), "lost": 0} for name, (proc, _) in servers.items()}
        for stage in STAGES[1:]:
            for name, (proc, url) in servers.items():
                if stage.startswith("after"):
                    runs = measure_runs(url, up_url, RUNS)
                    time.sleep(2)
                    figures[name][stage] = pss_mb(proc)
                    figures[name]["lost"] += RUNS - runs["closed"]
                else:
                    figures[name][stage], lost = streams_pss(proc, url)
                    figures[name]["lost"] += lost
                print(name, stage, f"{figures[name][stage]:.0f} MB", flush=True)
                time.sleep(3)
        return figures
    finally:
        for proc, _ in servers.values():
            stop(proc)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-memory-")
    up_port = free_port()
    upstream = start([sys.executable, str(BENCH / "stream_upstream.py"), str(up_port),
                      str(DELTAS), str(INTERVAL)], up_port)
    rounds = []
    try:
        for _ in range(args.rounds):
            rounds.append(round_(up_port, tmp))
    finally:
        stop(upstream)
    names = list(rounds[0])
    lines = ["# What gc.freeze() saves", "",
             f"Made by `python bench/memory.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
             "on this project's machine kind (2 cores). PSS of the gateway's whole process tree "
             "(master and 2 workers), as the Procfile starts it and with gunicorn.conf.py's "
             "pre_fork hook taken out; both started anew each round, measured in turn. "
             f"Medians of {args.rounds} rounds (each round's figures after the slash).", "",
             "| stage | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for stage in STAGES:
        cells = []
        for name in names:
            values = [r[name][stage] for r in rounds]
            cells.append(f"{statistics.median(values):.0f} MB / "
                         + ", ".join(f"{v:.0f}" for v in values))
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lost = {name: sum(r[name]["lost"] for r in rounds) for name in names}
    lines += ["", "Streams that did not complete, and runs whose stream the provider did not see "
              "closed, in all rounds: " + "; ".join(f"{n}: {v}" for n, v in lost.items()) + "."]
    (args.out / "benchmarks-memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
