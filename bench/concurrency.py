"""Benchmark how many streams and gateway runs one instance holds at once.

A provider on 127.0.0.1 (bench/stream_upstream.py, asyncio) streams 20 deltas 0.5 s
apart, so 10 s a stream, as in the issue that set the goals. 100, 500, 1,000 and 2,000 streaming clients (asyncio, in a
process of their own) open their streams spread evenly over 2 s, and each records the
time to its first text delta and whether its stream completed. Rows: the provider
directly (Chat Completions, Responses API, and Responses API over TLS), the barest relay
of the same stack (bench/barest_proxy.py under the gateway's gevent settings: the floor
each gateway row's CPU is compared with), this gateway as the Procfile starts it
(gevent) passing a Responses API stream through (groq; also from a provider over TLS)
and translating a Chat one (anthropic), the gateway under gthread (today's 32 threads a worker, and 1,000), and
LiteLLM's proxy (1 worker, Chat Completions; with --litellm). Every row runs in every
round, in turn (interleaved); each figure is the median of the rounds. Each row
reports completed streams, first-delta p50/p99, the server tree's peak PSS while the
streams run, and its CPU seconds per 1,000 deltas.

Then gateway runs: 2,000 background creates at once at a Chat-only provider, the time
from the last create's answer until the provider has every stream open; then 2,000
cancels at once, how many answered `cancelled`, and for each stream the time from its
cancel's answer until the provider saw it closed.

Usage: python bench/concurrency.py [--rounds 3] [--sizes 100,500,1000,2000] [--litellm]
Writes docs/benchmarks-concurrency.md, .json and .png. Not a test; never runs in CI.
"""

import argparse
import asyncio
import json
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from run import BENCH, KEY, cpu_seconds, free_port, memory_bytes, start, stop, tree  # noqa: E402

DELTAS, INTERVAL, SPREAD = 20, 0.5, 2.0
STREAM_TIMEOUT = 45.0  # seconds a client waits for its whole stream
RUNS = 2000


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def one_stream(host, port, path, body, delay, key, tls=None):
    """(seconds to the first delta or None, completed) for one streaming request."""
    await asyncio.sleep(delay)
    payload = json.dumps(body).encode()
    start_at = time.perf_counter()
    first, done, gap, last = None, False, 0.0, None
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                     "Connection: close\r\n\r\n".encode() + payload)
        seen = b""
        async with asyncio.timeout(STREAM_TIMEOUT):
            while chunk := await reader.read(65536):
                seen = seen[-64:] + chunk
                if first is None and b"w0 " in seen:
                    first = time.perf_counter() - start_at
                if first is not None and b'"w' in chunk:  # a delta: the gap since the last
                    now = time.perf_counter()
                    gap, last = max(gap, now - (last or now)), now
                if b"response.completed" in seen or b"[DONE]" in seen:
                    done = True
                    break
        writer.close()
    except (OSError, TimeoutError):
        pass
    return first, done, gap


async def streams(url, path, body, count):
    host, port = url.split("//")[1].split(":")
    # https: the provider over TLS, taken directly (BENCH_CA_BUNDLE trusts its certificate)
    tls = ssl.create_default_context(cafile=os.environ["BENCH_CA_BUNDLE"]) \
        if url.startswith("https") else None
    tasks = [one_stream(host, int(port), path, {**body, "input": f"s{i}"} if "input" in body
                        else body, SPREAD * i / count, KEY, tls) for i in range(count)]
    return await asyncio.gather(*tasks)


def client_main(url, path, body, count):
    """Run in a process of its own: the clients' CPU is not the server's."""
    results = asyncio.run(streams(url, path, json.loads(body), int(count)))
    print(json.dumps(results))


def run_streams(url, path, body, count, ca_bundle=None):
    env = {**os.environ, "BENCH_CA_BUNDLE": ca_bundle or ""}
    out = subprocess.run([sys.executable, __file__, "--client", url, path, json.dumps(body),
                          str(count)], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout)


def measure_row(proc, url, path, body, count, probes=None, ca_bundle=None):
    """Stream `count` clients through a server; its peak PSS meanwhile, sampled every 0.5 s
    (a busy server may still be accepting the last streams when the first end, so no one
    moment has them all). With `probes` (the CPU seconds they cost the server alone), time
    background creates (a store write each) once every stream should be open; that CPU
    is taken out of the row's."""
    cpu = cpu_seconds(tree(proc.pid)) if proc else 0.0
    sample, peak, running = {}, [], threading.Event()
    running.set()

    def sampler():
        while proc and running.is_set():
            peak.append(memory_bytes(tree(proc.pid))[1])
            time.sleep(0.5)

    def writer():
        time.sleep(SPREAD + 3)
        sample["writes"] = store_writes(url)

    threads = [threading.Thread(target=sampler)]
    threads += [threading.Thread(target=writer)] if probes is not None else []
    for thread in threads:
        thread.start()
    try:
        results = run_streams(url, path, body, count, ca_bundle)
    finally:
        running.clear()
        for thread in threads:
            thread.join()
    firsts = [f for f, _, _ in results if f is not None]
    completed = sum(done for _, done, _ in results)
    cpu = (cpu_seconds(tree(proc.pid)) - cpu - (probes or 0.0)) if proc else float("nan")
    return {"completed": completed, "p50": pct(firsts, 0.5), "p99": pct(firsts, 0.99),
            "gap_p99": pct([g for _, _, g in results], 0.99),
            "pss": max(peak, default=float("nan")),
            "cpu_per_1k": cpu / max(1, completed * DELTAS / 1000),
            **sample.get("writes", {})}


def store_writes(url, count=100, proc=None):
    """p50/p99 seconds of `count` background creates, 4 at a time: each answers once the
    store has the run (no provider call before the answer). Each run streams one delta, so
    it has ended when the row's streams do. With `proc`, also the CPU seconds of it all
    (the runs waited for), to take out of a row's."""
    import requests
    from concurrent.futures import ThreadPoolExecutor

    cpu = cpu_seconds(tree(proc.pid)) if proc else 0.0

    def create(i):
        started = time.perf_counter()
        try:
            requests.post(f"{url}/v1/responses", timeout=30,
                          headers={"Authorization": f"Bearer {KEY}"},
                          json={"model": "anthropic/deltas-1", "input": f"w{i}",
                                "background": True})
        except requests.RequestException:
            return float("inf")  # not answered: the server had no room for it
        return time.perf_counter() - started

    with ThreadPoolExecutor(4) as pool:
        took = list(pool.map(create, range(count)))
    measured = {"write_p50": pct(took, 0.5), "write_p99": pct(took, 0.99)}
    if proc:
        time.sleep(4 * INTERVAL)  # the last runs end (one delta, INTERVAL after they start)
        measured["cpu"] = cpu_seconds(tree(proc.pid)) - cpu
    return measured


def gateway(upstream_port, store_dir, flags="", root=ROOT, **env):
    """The gateway (from the checkout at `root`) as the Procfile starts it, with `env` and
    gunicorn `flags` added."""
    port = free_port()
    full = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
            "GATEWAY_API_KEYS": KEY, "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port} {flags}",
            "STORE_URL": f"sqlite:///{store_dir}/gateway-{port}.sqlite3",
            "GROQ_API_KEY": "gsk-bench", "GROQ_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
            "ANTHROPIC_API_KEY": "sk-bench",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1", **env}
    log = open(f"{store_dir}/gateway-{port}.log", "w")  # kept: what failed, if a row fails
    proc = start(["gunicorn", "app:create_app()"], port, cwd=root, env=full, stdout=log,
                 stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def relay(upstream_url):
    """The barest relay under the gateway's gevent settings."""
    port = free_port()
    env = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
           "GATEWAY_API_KEYS": KEY, "OPENAI_API_KEY": "sk-bench",
           "OPENAI_BASE_URL": f"{upstream_url}/v1", "STREAM_BASE_URL": f"{upstream_url}/v1"}
    proc = start(["gunicorn", "--worker-class", "gevent", "--workers", "2",
                  "--worker-connections", "4000", "--keep-alive", "5", "--bind",
                  f"127.0.0.1:{port}", "barest_proxy:app"], port, cwd=BENCH, env=env)
    return proc, f"http://127.0.0.1:{port}"


def tls_files(tmp):
    """A certificate for 127.0.0.1 (cert.pem, key.pem in `tmp`) and the CA bundle that
    trusts it: certifi's, as a gateway trusts by default, with the test CA added."""
    import certifi
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(f"{tmp}/cert.pem")
    issued.private_key_pem.write_to_path(f"{tmp}/key.pem")
    bundle = Path(tmp) / "ca-bundle.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes() + ca.cert_pem.bytes())
    return str(bundle)


def litellm(upstream_port, tmp):
    binary = BENCH / "litellm-venv" / "bin" / "litellm"
    if not binary.exists():
        raise SystemExit("--litellm needs bench/litellm-venv: bench/run --litellm makes it")
    port = free_port()
    config = Path(tmp) / "litellm-streams.yaml"
    config.write_text(
        "model_list:\n  - model_name: bench\n    litellm_params:\n"
        f"      model: openai/bench\n      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        f"      api_key: sk-bench\ngeneral_settings:\n  master_key: {KEY}\n")
    proc = start([str(binary), "--config", str(config), "--host", "127.0.0.1", "--port",
                  str(port), "--num_workers", "1"], port,
                 env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    return proc, f"http://127.0.0.1:{port}"


def upstream_stats(url, reset=False):
    import requests
    return requests.post(f"{url}/reset" if reset else f"{url}/stats", timeout=10).json()


async def call(host, port, method, path, body=None):
    payload = json.dumps(body).encode() if body is not None else b""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                 "Connection: close\r\n\r\n".encode() + payload)
    data = await reader.read()
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():  # one chunk is all a small JSON answer takes
        rest = rest.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    return json.loads(rest)


async def runs(url, count):
    """`count` background creates at once: their ids, and when the last was answered."""
    host, port = url.split("//")[1].split(":")
    port = int(port)

    async def create(i):
        body = await call(host, port, "POST", "/v1/responses",
                          {"model": "anthropic/long", "input": f"run{i}", "background": True})
        return body["id"], time.time()

    created = await asyncio.gather(*(create(i) for i in range(count)))
    last_create = max(t for _, t in created)
    return [i for i, _ in created], last_create


async def cancels(url, ids):
    """A cancel of each id at once: (status, when answered) for each."""
    host, port = url.split("//")[1].split(":")

    async def cancel(i):
        body = await call(host, int(port), "POST", f"/v1/responses/{i}/cancel")
        return body.get("status"), time.time()

    return await asyncio.gather(*(cancel(i) for i in ids))


def ours(streams):
    """The streams of the runs measure_runs made, not a straggler of another row's."""
    return {key: at for key, at in streams.items() if key.startswith("run")}


def measure_runs(gateway_url, upstream_url, count):
    upstream_stats(upstream_url, reset=True)
    ids, last_create = asyncio.run(runs(gateway_url, count))
    deadline = time.time() + 60
    while len(ours(upstream_stats(upstream_url)["opened"])) < count and time.time() < deadline:
        time.sleep(0.05)
    opened = ours(upstream_stats(upstream_url)["opened"])
    all_open = max(opened.values()) - last_create if len(opened) == count else float("nan")
    time.sleep(1)
    answers = asyncio.run(cancels(gateway_url, ids))
    deadline = time.time() + 30
    while len(ours(upstream_stats(upstream_url)["closed"])) < count and time.time() < deadline:
        time.sleep(0.05)
    closed = ours(upstream_stats(upstream_url)["closed"])
    lags = [closed[f"run{i}"] - answered for i, (_, answered) in enumerate(answers)
            if f"run{i}" in closed]
    return {"opened": len(opened), "all_open_after_last_create": all_open,
            "cancelled": sum(status == "cancelled" for status, _ in answers),
            "closed": len(closed), "close_lag_p50": pct(lags, 0.5),
            "close_lag_p99": pct(lags, 0.99), "close_lag_max": max(lags, default=float("nan"))}


FLOORS = ("direct", "barest relay")  # the rows every other row is compared with


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="100,500,1000,2000")
    parser.add_argument("--litellm", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--only", default="", help="rows whose name holds this text, and "
                        "the direct and relay ones (a quick look; the published run has "
                        "every row)")
    parser.add_argument("--no-runs", action="store_true", help="skip the gateway-runs part")
    parser.add_argument("--runs-only", action="store_true",
                        help="measure the gateway-runs part again, into OUT's saved streams")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    data_file = args.out / "benchmarks-concurrency.json"
    if args.report_only:
        report(json.loads(data_file.read_text()), args.out)
        return
    if args.runs_only:
        data = json.loads(data_file.read_text())
        data["runs"] = runs_again(args.rounds)
        data_file.write_text(json.dumps(data, indent=1))
        report(data, args.out)
        return
    tmp = tempfile.mkdtemp(prefix="bench-concurrency-")
    print(f"gateway logs: {tmp}/gateway-*.log", flush=True)
    up_port = free_port()
    upstream = start([sys.executable, str(BENCH / "stream_upstream.py"), str(up_port),
                      str(DELTAS), str(INTERVAL)], up_port)
    up_url = f"http://127.0.0.1:{up_port}"
    tls_port, bundle = free_port(), tls_files(tmp)
    tls_upstream = start([sys.executable, str(BENCH / "stream_upstream.py"), str(tls_port),
                          str(DELTAS), str(INTERVAL), f"{tmp}/cert.pem", f"{tmp}/key.pem"],
                         tls_port)
    chat = {"model": "bench", "messages": [{"role": "user", "content": "x"}], "stream": True}
    responses = {"model": "bench", "input": "x", "stream": True}
    servers = {"relay": relay(up_url), "gateway": gateway(up_port, tmp),
               "gateway tls": gateway(up_port, tmp, REQUESTS_CA_BUNDLE=bundle,
                                      GROQ_BASE_URL=f"https://127.0.0.1:{tls_port}/v1"),
               "gthread 32": gateway(up_port, tmp, WORKER_CLASS="gthread"),
               "gthread 1000": gateway(up_port, tmp, WORKER_CLASS="gthread",
                                       GUNICORN_THREADS="1000")}
    if args.litellm:
        servers["litellm"] = litellm(up_port, tmp)
    rows = {
        "direct, Chat Completions": (None, up_url, "/v1/chat/completions", chat),
        "direct, Responses API": (None, up_url, "/v1/responses", responses),
        "direct, Responses API over TLS": (None, f"https://127.0.0.1:{tls_port}",
                                           "/v1/responses", responses),
        "barest relay (gevent), Chat Completions": (*servers["relay"], "/v1/chat/completions",
                                                    chat),
        "barest relay (gevent), Responses API": (*servers["relay"], "/v1/responses", responses),
        "gateway (gevent), passed through": (*servers["gateway"], "/v1/responses",
                                             {**responses, "model": "groq/bench"}),
        "gateway (gevent), passed through, provider over TLS": (
            *servers["gateway tls"], "/v1/responses", {**responses, "model": "groq/bench"}),
        "gateway (gevent), translated": (*servers["gateway"], "/v1/responses",
                                         {**responses, "model": "anthropic/bench"}),
        "gateway (gthread, 32 threads), translated": (
            *servers["gthread 32"], "/v1/responses", {**responses, "model": "anthropic/bench"}),
        "gateway (gthread, 1,000 threads), translated": (
            *servers["gthread 1000"], "/v1/responses",
            {**responses, "model": "anthropic/bench"}),
    }
    if args.litellm:
        rows["LiteLLM proxy (1 worker), Chat Completions"] = (
            *servers["litellm"], "/v1/chat/completions", chat)
    rows = {n: r for n, r in rows.items() if args.only in n or n.startswith(FLOORS)}
    measured = {size: {name: [] for name in rows} for size in sizes}
    run_rounds, idle_writes = [], []
    try:
        for round_ in range(args.rounds):
            # What the store-write probes cost each gateway alone, to take out of its rows.
            probes = {proc.pid: store_writes(url, proc=proc)
                      for name, (proc, url) in servers.items()
                      if name.startswith(("gateway", "gthread"))}
            idle_writes.append(probes[servers["gateway"][0].pid])
            for size in sizes:
                for name, (proc, url, path, body) in rows.items():
                    cost = probes[proc.pid]["cpu"] if name.startswith("gateway") else None
                    result = measure_row(proc, url, path, body, size, probes=cost,
                                         ca_bundle=bundle)
                    measured[size][name].append(result)
                    print(f"round {round_ + 1}, {size} streams, {name}: {result}", flush=True)
                    time.sleep(1)
            if args.no_runs:
                continue
            run_rounds.append(measure_runs(servers["gateway"][1], up_url, RUNS))
            print(f"round {round_ + 1}, {RUNS} runs: {run_rounds[-1]}", flush=True)
    finally:
        for proc, _ in servers.values():
            stop(proc)
        stop(upstream)
        stop(tls_upstream)
    data = {"sizes": sizes, "rounds": args.rounds, "measured": measured, "runs": run_rounds,
            "idle_writes": idle_writes,
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    data_file.write_text(json.dumps(data, indent=1))
    report(data, args.out)


def runs_again(rounds):
    """The gateway-runs part alone, on a gateway and provider of its own."""
    up_port = free_port()
    upstream = start([sys.executable, str(BENCH / "stream_upstream.py"), str(up_port),
                      str(DELTAS), str(INTERVAL)], up_port)
    proc, url = gateway(up_port, tempfile.mkdtemp(prefix="bench-runs-"))
    try:
        measured = []
        for round_ in range(rounds):
            measured.append(measure_runs(url, f"http://127.0.0.1:{up_port}", RUNS))
            print(f"round {round_ + 1}, {RUNS} runs: {measured[-1]}", flush=True)
        return measured
    finally:
        stop(proc)
        stop(upstream)


def median(results, field):
    values = [r[field] for r in results if r.get(field, float("nan")) == r.get(field)]
    return statistics.median(values) if values else float("nan")


def report(data, out):
    sizes, measured = data["sizes"], data["measured"]
    lines = [
        "# How many streams one instance holds", "",
        f"Made by `python bench/concurrency.py{' --litellm' if any('LiteLLM' in n for n in next(iter(measured.values()))) else ''}` "
        f"on {data['when']}, on this project's machine kind (2 cores, shared by the clients, "
        "the provider and the servers). The provider streams 20 deltas 0.5 s apart (10 s a "
        "stream), and closes a kept-alive connection idle for 2 s, so each row opens its "
        "connections anew; over TLS, the gateway trusts certifi's bundle plus the test CA, "
        "and its rows compare with the direct row over TLS. The clients open their streams spread evenly "
        "over 2 s. Medians of "
        f"{data['rounds']} interleaved rounds. First delta: seconds from connecting to the "
        "first text delta; PSS: the server's whole process tree, its peak while the streams "
        "run (sampled every 0.5 s); CPU: the server tree's CPU seconds per 1,000 deltas "
        "(in a gateway row, less what its store-write probes cost that gateway alone at the "
        "round's start), and that against the barest relay's of the same kind of stream.", "",
        "| streams | row | completed | first delta p50 | p99 | p99 over direct | longest gap between deltas, p99 | PSS | CPU-s / 1k deltas | CPU vs barest relay | store write p50 / p99 |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size in sizes:
        rows = measured[str(size)] if str(size) in measured else measured[size]
        direct = {"Chat": median(rows["direct, Chat Completions"], "p99"),
                  "Responses": median(rows["direct, Responses API"], "p99"),
                  "TLS": median(rows.get("direct, Responses API over TLS", []), "p99")}
        floor = {"Chat": median(rows.get("barest relay (gevent), Chat Completions", []),
                                "cpu_per_1k"),
                 "Responses": median(rows.get("barest relay (gevent), Responses API", []),
                                     "cpu_per_1k")}
        for name, results in rows.items():
            kind = "Responses" if "passed through" in name or "Responses" in name else "Chat"
            base = direct["TLS"] if "TLS" in name else direct[kind]
            p99 = median(results, "p99")
            over = "" if name.startswith("direct") else f"{(p99 - base) * 1000:+.0f} ms"
            pss, cpu = median(results, "pss"), median(results, "cpu_per_1k")
            # Against the relay of the same kind of stream; it has no TLS row to compare with.
            ratio = "" if name.startswith(FLOORS) or "TLS" in name or floor[kind] != floor[kind] \
                else f"{cpu / floor[kind]:.2f}x"
            writes = "" if not any("write_p50" in r for r in results) else (
                f"{median(results, 'write_p50') * 1000:.0f} / "
                f"{median(results, 'write_p99') * 1000:.0f} ms")
            lines.append(
                f"| {size} | {name} | {median(results, 'completed'):.0f} | "
                f"{median(results, 'p50'):.3f} s | {p99:.3f} s | {over} | "
                f"{median(results, 'gap_p99'):.2f} s | "
                f"{'' if pss != pss else f'{pss / 2**20:.0f} MB'} | "
                f"{'' if name.startswith('direct') else f'{cpu:.2f}'} | {ratio} | {writes} |")
    idle = data.get("idle_writes")
    if idle:
        lines += ["", "Store write: a background create at a Chat-only provider (a run of one "
                  "delta), which answers "
                  "once the SQLite store holds the queued run; 100 of them, 4 at a time, while "
                  "the row's streams are open. With no stream open, the gevent gateway's: "
                  f"{median(idle, 'write_p50') * 1000:.0f} ms p50, "
                  f"{median(idle, 'write_p99') * 1000:.0f} ms p99."]
    runs = data["runs"]
    if runs:
        lines += ["", f"## {RUNS} gateway runs at once", "",
                  f"{RUNS} background creates at once at a Chat-only provider (the gateway runs "
                  "them), then, once all stream, 2,000 cancels at once. Medians of the rounds.", "",
                  "| streams open at the provider | all open after the last create's answer | "
                  "cancels answered `cancelled` | streams the provider saw closed | "
                  "close after its cancel's answer p50 | p99 | max |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
                  f"| {median(runs, 'opened'):.0f} | {median(runs, 'all_open_after_last_create'):.2f} s | "
                  f"{median(runs, 'cancelled'):.0f} | {median(runs, 'closed'):.0f} | "
                  f"{median(runs, 'close_lag_p50') * 1000:.0f} ms | "
                  f"{median(runs, 'close_lag_p99') * 1000:.0f} ms | "
                  f"{median(runs, 'close_lag_max') * 1000:.0f} ms |", "",
                  "Each round: " + "; ".join(
                      f"{r['opened']} opened, {r['cancelled']} cancelled, {r['closed']} closed"
                      for r in runs) + "."]
    (out / "benchmarks-concurrency.md").write_text("\n".join(lines) + "\n")
    plot(data, out)


def plot(data, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes, measured = data["sizes"], data["measured"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = list((measured[str(sizes[0])] if str(sizes[0]) in measured else measured[sizes[0]]))
    for name in names:
        rows = [measured[str(s)] if str(s) in measured else measured[s] for s in sizes]
        left.plot(sizes, [median(r[name], "p99") for r in rows], marker="o", label=name)
        right.plot(sizes, [median(r[name], "completed") / s for r, s in zip(rows, sizes)],
                   marker="o", label=name)
    left.set(xlabel="streams opened over 2 s", ylabel="first delta p99 (s)", yscale="log",
             title="Time to the first delta, p99")
    right.set(xlabel="streams opened over 2 s", ylabel="share completed",
              title="Streams completed")
    left.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "benchmarks-concurrency.png", dpi=110)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        client_main(*sys.argv[2:6])
    else:
        main()
