"""Benchmark long outputs: the gateway worker's CPU per delta from 1,000 to 64,000 deltas.

Reasoning models write tens of thousands of tokens; a cost per delta that grows with the
output so far would stall every other stream of the worker. One gateway worker (the
Procfile's gunicorn, WEB_CONCURRENCY=1) serves one output at a time from a provider that
sends its deltas as fast as it can (bench/stream_upstream.py, asyncio), in four kinds:
streamed and passed through (groq), streamed and translated (anthropic, Chat
Completions), and each run in the background by the gateway (background: true, polled
to its end once a second). The worker's CPU (utime + stime from /proc) over the request,
divided by the deltas, is the figure. Rows are interleaved round by round; medians.

With --before PATH, a gateway from another checkout (say the release before) runs every
row too, in the same rounds, so the two compare within one run.

    python bench/long_outputs.py [--rounds 3] [--before /path/to/old/checkout]

Writes docs/benchmarks-long-outputs.md. Not a test; never runs in CI.
"""

import argparse
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-long-key"
LENGTHS = (1000, 4000, 16000, 64000)
KINDS = {  # name: (model prefix, background)
    "streamed, passed through (groq)": ("groq", False),
    "streamed, translated (anthropic)": ("anthropic", False),
    "gateway run, Responses API reader (groq)": ("groq", True),
    "gateway run, translated (anthropic)": ("anthropic", True),
}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


@contextmanager
def provider():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "stream_upstream.py"),
                             str(port), "20", "0"])
    try:
        wait_for(f"http://127.0.0.1:{port}/stats")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def gateway(root, upstream):
    """The Procfile's gunicorn from the checkout at `root`, one worker; (URL, worker pid)."""
    port, folder = free_port(), tempfile.mkdtemp()
    command = shlex.split((Path(root) / "Procfile").read_text().partition(":")[2])
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
           "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}", "WEB_CONCURRENCY": "1",
           "GATEWAY_API_KEYS": KEY, "STORE_URL": f"sqlite:///{folder}/gateway.sqlite3",
           "GROQ_API_KEY": "gsk-bench", "GROQ_BASE_URL": upstream, "UPSTREAM_TIMEOUT": "120",
           "ANTHROPIC_API_KEY": "sk-ant-bench", "ANTHROPIC_BASE_URL": upstream}
    with open(Path(folder) / "gunicorn.log", "wb") as log:
        proc = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/healthz")
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        yield url, int(children[0])
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one(url, pid, kind, deltas):
    """The worker's CPU-seconds for one output of `deltas` deltas of this kind."""
    prefix, background = KINDS[kind]
    body = {"model": f"{prefix}/deltas-{deltas}", "input": "x"}
    headers = {"Authorization": f"Bearer {KEY}"}
    before = cpu_seconds(pid)
    if background:
        created = requests.post(f"{url}/v1/responses", json={**body, "background": True},
                                headers=headers, timeout=30).json()
        while True:
            time.sleep(1)
            status = requests.get(f"{url}/v1/responses/{created['id']}", headers=headers,
                                  timeout=300).json()["status"]  # a stalled worker is slow
            if status not in ("queued", "in_progress"):
                break
    else:
        with requests.post(f"{url}/v1/responses", json={**body, "stream": True},
                           headers=headers, stream=True, timeout=300) as resp:
            for _ in resp.iter_content(65536):
                pass
        status = "completed"
    if status != "completed":
        raise RuntimeError(f"{kind} at {deltas}: {status}")
    return cpu_seconds(pid) - before


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="another checkout whose gateway runs every row too")
    args = parser.parse_args()
    roots = {"now": ROOT, **({"before": Path(args.before)} if args.before else {})}
    results = {}
    with ExitStack() as stack:
        upstream = stack.enter_context(provider())
        gateways = {name: stack.enter_context(gateway(root, upstream))
                    for name, root in roots.items()}
        for round_ in range(args.rounds):
            for deltas in LENGTHS:
                for kind in KINDS:
                    for name, (url, pid) in gateways.items():
                        spent = one(url, pid, kind, deltas)
                        results.setdefault((name, kind, deltas), []).append(spent)
                        print(f"round {round_ + 1} {name} {kind} {deltas}: "
                              f"{spent / deltas * 1e6:.1f} us/delta", flush=True)
    report(results, roots, args)


def report(results, roots, args):
    per_delta = {key: statistics.median(runs) / key[2] * 1e6 for key, runs in results.items()}
    command = "python bench/long_outputs.py --rounds %d%s" % (
        args.rounds, " --before CHECKOUT" if args.before else "")
    lines = [
        "# Long outputs: the worker's CPU per delta, from 1,000 to 64,000 deltas",
        "",
        f"`{command}`, on this project's machine kind (2 cores, shared by the provider, "
        "the client and the gateway). One gateway worker, one output at a time, deltas "
        "as fast as the provider (bench/stream_upstream.py) sends them; the worker's CPU "
        "over the request (a background run's: from its create to its end, polled once "
        "a second), divided by the deltas. Medians of the rounds, rows interleaved in one "
        "run. Flat is the goal: the last column is the cost per delta at 64,000 over its "
        "cost at 1,000.",
        "",
        "| gateway | output | " + " | ".join(f"{n:,} deltas, us/delta" for n in LENGTHS)
        + " | 64k / 1k |",
        "| --- | --- | " + " | ".join("---:" for _ in LENGTHS) + " | ---: |",
    ]
    for name in roots:
        for kind in KINDS:
            row = [per_delta[(name, kind, n)] for n in LENGTHS]
            lines.append(f"| {name} | {kind} | " + " | ".join(f"{v:.1f}" for v in row)
                         + f" | {row[-1] / row[0]:.2f} |")
    lines += [
        "",
        "Reading it: the 1,000 column carries each request's fixed cost (the create, "
        "its store writes, a background run's polls) over the fewest deltas, and /proc "
        "counts CPU in 10 ms ticks, so it is the coarsest; what matters is that no row "
        "grows toward 64,000. A cost per delta that grew with the output so far (a "
        "text rejoined, or compared whole, for every delta) shows as a last column well "
        "over 1.",
    ]
    out = ROOT / "docs" / "benchmarks-long-outputs.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
