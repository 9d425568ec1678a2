"""Benchmark creates at a provider that closes idle connections: how many fail.

Providers close kept-alive connections left idle (bench/stream_upstream.py after 2 s, as
gunicorn does; uvicorn after 5 s). A create sent on one just as it closes fails, and may
not be sent again. Here many clients each send streamed creates spaced 1.8 to 2.2 s apart,
around that close, for a while; every create that did not come back whole is counted.
With --before PATH, a gateway from another checkout gets the same creates, interleaved.

    python bench/idle_close.py [--clients 50] [--seconds 60] [--before CHECKOUT]

Writes docs/benchmarks-idle-close.md. Not a test; never runs in CI.
"""

import argparse
import random
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import requests

from long_outputs import KEY, ROOT, gateway, provider


def client(url, until, counts, lock):
    """One client: a streamed create every 1.8 to 2.2 s, on its own kept-alive session."""
    with requests.Session() as session:
        while time.monotonic() < until:
            try:
                with session.post(f"{url}/v1/responses", timeout=30, stream=True,
                                  headers={"Authorization": f"Bearer {KEY}"},
                                  json={"model": "groq/deltas-1", "input": "x",
                                        "stream": True}) as resp:
                    text = resp.text
                ok = resp.status_code == 200 and "response.completed" in text
            except requests.RequestException:
                ok = False
            with lock:
                counts["sent" if ok else "failed"] += 1
            time.sleep(random.uniform(1.8, 2.2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--before", help="another checkout whose gateway gets the creates too")
    args = parser.parse_args()
    roots = {"now": ROOT, **({"before": Path(args.before)} if args.before else {})}
    counts = {name: {"sent": 0, "failed": 0} for name in roots}
    lock = threading.Lock()
    with ExitStack() as stack:
        upstream = stack.enter_context(provider())
        urls = {name: stack.enter_context(gateway(root, upstream))[0]
                for name, root in roots.items()}
        until = time.monotonic() + args.seconds
        threads = [threading.Thread(target=client, args=(urls[name], until, counts[name], lock))
                   for _ in range(args.clients) for name in roots]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    lines = [
        "# Creates at a provider that closes idle connections after 2 s",
        "",
        f"`python bench/idle_close.py --clients {args.clients} --seconds {args.seconds:g}"
        f"{' --before CHECKOUT' if args.before else ''}`: {args.clients} clients per gateway, "
        "each a streamed create every 1.8 to 2.2 s on a kept-alive connection, to one "
        "gateway worker; the provider (bench/stream_upstream.py) closes a connection idle "
        "for 2 s. Gateways run side by side, in one run.",
        "",
        "| gateway | creates | failed |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {c['sent'] + c['failed']:,} | {c['failed']} |" for name, c in counts.items()),
    ]
    (ROOT / "docs" / "benchmarks-idle-close.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
