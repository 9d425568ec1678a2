"""Benchmark the largest request bodies: how long one worker is held from its other requests.

One gunicorn worker as the Procfile starts it; a client asks /healthz every 20 ms while
another sends one 16 MiB body (or the costliest one within MAX_BODY_VALUES) in a shape that
costs a parser most, or sixteen such bodies at once (a burst). Per row: the answers, the
time to the last, the slowest health check beside them, and how much the worker's memory
grew. Rounds interleave the shapes; medians are reported.
With --before PATH, a gateway from another checkout gets the same bodies, interleaved.

    python bench/large_bodies.py [--rounds 3] [--before CHECKOUT]

Writes docs/benchmarks-large-bodies.md. Not a test; never runs in CI.
"""

import argparse
import statistics
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import requests

from long_outputs import KEY, ROOT, gateway, provider

LIMIT = 16 * 1024 * 1024  # MAX_CONTENT_LENGTH's default
HEAD = b'{"model": "groq/deltas-1", "stream": true, '
META = HEAD + b'"input": "x", "metadata": ['


def fill(prefix, unit, suffix):
    return prefix + unit * ((LIMIT - len(prefix) - len(suffix)) // len(unit)) + suffix


SHAPES = {
    "five million empty objects": fill(HEAD + b'"input": [', b"{},", b"{}]}"),
    "eight million numbers": fill(META, b"1,", b"1]}"),
    "four million strings of brackets": fill(META, b'"{",', b'"{"]}'),
    "two million floats of 17 digits": fill(META, b"1.2345678901234567e300,", b"1]}"),
    "one string of code": fill(HEAD + b'"input": "', b'f(x){[a,\\"]}', b'"}'),
    "one string of Chinese": fill(HEAD + b'"input": "', "汉".encode(), b'"}'),
    "100,000 floats (the most allowed)": META + b",".join(
        [b"1.2345678901234567e300"] * 99_990) + b"]}",
}
BURST = 16  # bodies of Chinese text sent at once, the last row



def rss(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def one(url, pid, data, copies=1):
    """(statuses, seconds to the last answer, slowest health check, memory growth) for
    `copies` of a body sent at once."""
    slowest, peak, start_rss = [0.0], [rss(pid)], rss(pid)
    stop = threading.Event()

    def checks():
        with requests.Session() as session:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    session.get(f"{url}/healthz", timeout=30)
                except requests.RequestException:
                    pass
                slowest[0] = max(slowest[0], time.monotonic() - started)
                peak[0] = max(peak[0], rss(pid))
                time.sleep(0.02)

    thread = threading.Thread(target=checks)
    thread.start()
    time.sleep(0.3)
    started, statuses = time.monotonic(), []

    def send():
        statuses.append(requests.post(f"{url}/v1/responses", data=data, timeout=120, headers={
            "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}).status_code)

    senders = [threading.Thread(target=send) for _ in range(copies)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    took = time.monotonic() - started
    time.sleep(0.3)
    stop.set()
    thread.join()
    return "/".join(str(s) for s in sorted(set(statuses))), took, slowest[0], peak[0] - start_rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="another checkout whose gateway gets every body too")
    args = parser.parse_args()
    checkouts = {"now": ROOT, **({"before": Path(args.before)} if args.before else {})}
    bodies = {shape: (data, 1) for shape, data in SHAPES.items()}
    bodies[f"{BURST} strings of Chinese at once"] = (SHAPES["one string of Chinese"], BURST)
    rows = {(name, shape): [] for name in checkouts for shape in bodies}
    with ExitStack() as stack:
        upstream = stack.enter_context(provider())
        gateways = {name: stack.enter_context(gateway(root, upstream))
                    for name, root in checkouts.items()}
        for round_ in range(args.rounds):
            for shape, (data, copies) in bodies.items():
                for name, (url, pid) in gateways.items():
                    rows[name, shape].append(one(url, pid, data, copies))
                    print(round_, name, shape, rows[name, shape][-1], flush=True)
    lines = [
        "# The largest request bodies: how long a worker is held",
        "",
        "`python bench/large_bodies.py" + (" --before CHECKOUT" if args.before else "") +
        f"` ({args.rounds} interleaved rounds, medians). One worker as the Procfile starts it;",
        "/healthz asked every 20 ms beside one body of 16 MiB (MAX_CONTENT_LENGTH) in a shape",
        "that costs a parser most, or the costliest within MAX_BODY_VALUES. *Slowest check* is",
        "the longest the worker kept a health check waiting: how long it was held.",
        "",
        "| gateway | body | answer | answered in | slowest check | memory growth |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (name, shape), results in rows.items():
        status = "/".join(sorted({s for r in results for s in r[0].split("/")}))
        took, slowest, grown = (statistics.median(r[i] for r in results) for i in (1, 2, 3))
        lines.append(f"| {name} | {shape} | {status} | {took:.2f} s | {slowest:.2f} s | "
                     f"{grown / 2**20:.0f} MB |")
    (ROOT / "docs" / "benchmarks-large-bodies.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
