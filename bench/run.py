"""Benchmark the cancel path: direct to a fake provider, through this gateway, through
the barest Flask proxy (bench/barest_proxy.py, a yardstick), and (with --litellm)
through LiteLLM's proxy, side by side in one run so that ratios hold on a noisy
shared machine.

Two fake providers: nginx answering at once (the physical limit), and an asyncio
server answering after 50 ms (a real provider's latency). wrk is the client. Every
server runs throughout; each round measures every row in turn (interleaved), and the
report gives the median of the rounds. For each row: req/s, p50/p90/p99 latency,
errors, peak RSS and PSS of the server's whole process tree and its CPU seconds per
1,000 requests, from /proc, and how busy the whole host was (200 % = both cores).

Usage: python bench/run.py [--rounds N] [--duration S] [--warmup S] [--litellm] [--out DIR]
Writes DIR/benchmarks.md (table, ratios, targets) and DIR/benchmarks.png.
"""

import argparse
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
KEY = "bench-key"
CONCURRENCY = (1, 8, 32)
PROXY = "barest Flask proxy (yardstick)"
GEVENT_PROXY = "barest Flask proxy, gevent worker"
TICKS = os.sysconf("SC_CLK_TCK")
# What nginx answers: a cancelled Response echoing the id ($1) from the path.
NGINX_BODY = json.dumps({
    "id": "$1", "object": "response", "created_at": 1741476542, "status": "cancelled",
    "model": "gpt-4o-mini", "output": [],
    "usage": {"input_tokens": 12, "output_tokens": 0, "total_tokens": 12},
}, separators=(",", ":"))
NGINX_CONF = """
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {tmp}/body;
  server {{
    listen 127.0.0.1:{port};
    location ~ ^/v1/responses/([^/]+)/cancel$ {{
      default_type application/json;
      return 200 '{body}';
    }}
  }}
}}
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a benchmark server exited early: {proc.args}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listened on port {port}")


def start(args, port, **kwargs):
    """Start a server process and wait until it listens on `port`."""
    kwargs = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **kwargs}
    proc = subprocess.Popen(args, **kwargs)
    wait_for_port(port, proc)
    return proc


def start_nginx(tmp):
    port = free_port()
    conf = Path(tmp) / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, body=NGINX_BODY))
    return start(["nginx", "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"], port), port


def start_slow_upstream():
    port = free_port()
    return start([sys.executable, str(BENCH / "slow_upstream.py"), str(port)], port), port


def start_gateway(upstream_port, variant=""):
    """The gateway exactly as the Procfile starts it, on a new SQLite store; a variant
    ("GUNICORN_THREADS=32 --keep-alive 0") adds environment variables and gunicorn flags."""
    port = free_port()
    store = Path(tempfile.mkdtemp(prefix="bench-store-")) / "gateway.sqlite3"
    kind, _, command = (ROOT / "Procfile").read_text().strip().partition(":")
    words = shlex.split(variant)
    env = {
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
        "GATEWAY_API_KEYS": KEY,
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
        "STORE_URL": f"sqlite:///{store}",
        **dict(w.split("=", 1) for w in words if w[:1].isupper() and "=" in w),
    }
    flags = " ".join(w for w in words if not (w[:1].isupper() and "=" in w))
    env["GUNICORN_CMD_ARGS"] = f"--bind 127.0.0.1:{port} {flags}".strip()
    return start(shlex.split(command), port, cwd=ROOT, env=env), port


def start_barest_proxy(upstream_port, worker_class="gthread"):
    """The yardstick (bench/barest_proxy.py) with gunicorn settings like the gateway's,
    less the access log: 2 workers, keep-alive 5 s; gthread with 32 threads each, preloaded,
    or gevent's worker (not preloaded, so gunicorn patches before the app is imported)."""
    port = free_port()
    env = {
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
        "GATEWAY_API_KEYS": KEY, "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream_port}/v1",
    }
    concurrency = (["--threads", "32", "--preload"] if worker_class == "gthread"
                   else ["--worker-connections", "4000"])
    command = ["gunicorn", "--worker-class", worker_class, "--workers", "2", *concurrency,
               "--keep-alive", "5", "--bind", f"127.0.0.1:{port}", "barest_proxy:app"]
    return start(command, port, cwd=BENCH, env=env), port


def start_litellm(upstream_port, tmp):
    """LiteLLM's proxy from its own venv (bench/litellm-venv), one OpenAI deployment."""
    binary = BENCH / "litellm-venv" / "bin" / "litellm"
    if not binary.exists():
        raise SystemExit("--litellm needs bench/litellm-venv: bench/run --litellm makes it")
    port = free_port()
    config = Path(tmp) / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: sk-bench\n"
        f"general_settings:\n  master_key: {KEY}\n"
    )
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return start([str(binary), "--config", str(config), "--host", "127.0.0.1",
                  "--port", str(port), "--num_workers", "1"], port, env=env), port


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def tree(pid):
    """pid and all its descendants."""
    pids = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        pids += tree(int(child))
    return pids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def host_jiffies():
    """(busy, total) CPU time of the whole host so far, from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def memory_bytes(pids):
    """(RSS, PSS) of the processes: RSS counts a page shared by n processes n times,
    PSS counts 1/n of it in each, so their PSS adds up to what the tree really uses."""
    rss = pss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
    return rss, pss


def wrk(port, concurrency, seconds):
    """Run wrk against 127.0.0.1:port; return the figures its script prints."""
    threads = 1 if concurrency == 1 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
         "-s", str(BENCH / "cancel.lua"), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
        # A new id prefix for each run: a repeated id would be answered from the store.
        env={**os.environ, "BENCH_KEY": KEY, "BENCH_RUN": uuid.uuid4().hex[:12]},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure(port, pid, concurrency, args):
    """Warm up, then measure one row; pid is the process tree to watch, or None."""
    wrk(port, concurrency, args.warmup)
    pids = tree(pid) if pid else []
    peak, sampling = [0, 0], threading.Event()

    def sample():
        while not sampling.wait(0.2):
            peak[:] = map(max, peak, memory_bytes(pids))

    sampler = threading.Thread(target=sample)
    cpu_before, host_before = cpu_seconds(pids), host_jiffies()
    sampler.start()
    figures = wrk(port, concurrency, args.duration)
    sampling.set()
    sampler.join()
    cpu = cpu_seconds(pids) - cpu_before
    busy, total = (after - before for after, before in zip(host_jiffies(), host_before))
    done = figures["requests"]
    return {
        "concurrency": concurrency,
        "rps": done / (figures["duration_us"] / 1e6),
        "p50_ms": figures["p50_us"] / 1000,
        "p90_ms": figures["p90_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "errors": figures["socket_errors"] + figures["non_2xx"],
        "rss_mb": peak[0] / 2**20 if pid else None,
        "pss_mb": peak[1] / 2**20 if pid else None,
        "cpu_per_1k": cpu / done * 1000 if pid and done else None,
        "host_busy": 100 * os.cpu_count() * busy / total if total else None,
    }


def run(args):
    """Every row, upstream by upstream, rounds interleaved; a list of median rows."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # nginx's workers run as another user
        for upstream_name, starter in (("instant", lambda: start_nginx(tmp)),
                                       ("50 ms", start_slow_upstream)):
            upstream, upstream_port = starter()
            servers = {"direct": (None, upstream_port)}
            try:
                for name, flags in args.gateway_configs:
                    servers[name] = start_gateway(upstream_port, flags)
                servers[PROXY] = start_barest_proxy(upstream_port)
                servers[GEVENT_PROXY] = start_barest_proxy(upstream_port, "gevent")
                if args.litellm:
                    servers["LiteLLM (1 worker)"] = start_litellm(upstream_port, tmp)
                runs = {}
                for round_ in range(args.rounds):
                    for c in CONCURRENCY:
                        for target, (server, port) in servers.items():  # interleaved
                            row = measure(port, server.pid if server else None, c, args)
                            print(json.dumps({"round": round_, "target": target,
                                              "upstream": upstream_name, **row}), flush=True)
                            runs.setdefault((target, c), []).append(row)
                for (target, c), measured in runs.items():
                    rows.append({**median_row(measured), "upstream": upstream_name,
                                 "target": target, "rounds": len(measured)})
            finally:
                for server, _ in servers.values():
                    if server:
                        stop(server)
                stop(upstream)
    return rows


def median_row(measured):
    """The median of each figure over the rounds (peak memory: the highest)."""
    row = {}
    for key, value in measured[0].items():
        values = [m[key] for m in measured if m[key] is not None]
        if not values:
            row[key] = None
        elif key in ("rss_mb", "pss_mb", "errors"):
            row[key] = max(values)
        else:
            row[key] = statistics.median(values)
    return row


def fmt(value, spec):
    return "—" if value is None else format(value, spec)


def table(rows):
    lines = ["| upstream | target | c | req/s | p50 ms | p90 ms | p99 ms | errors "
             "| peak PSS MB | peak RSS MB | CPU s / 1k req | host busy % |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(rows, key=lambda r: (r["upstream"] != "instant", r["concurrency"])):
        lines.append(
            f"| {r['upstream']} | {r['target']} | {r['concurrency']} | {r['rps']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} "
            f"| {fmt(r['pss_mb'], '.0f')} | {fmt(r['rss_mb'], '.0f')} "
            f"| {fmt(r['cpu_per_1k'], '.2f')} | {fmt(r['host_busy'], '.0f')} |")
    return "\n".join(lines)


def pick(rows, upstream, target, c):
    return next((r for r in rows if (r["upstream"], r["target"], r["concurrency"])
                 == (upstream, target, c)), None)


def findings(rows, gateway):
    """The ratios in words, and each target checked against the figures."""
    out = []
    for upstream in ("instant", "50 ms"):
        for c in CONCURRENCY:
            g, d = pick(rows, upstream, gateway, c), pick(rows, upstream, "direct", c)
            lite = pick(rows, upstream, "LiteLLM (1 worker)", c)
            line = (f"- {upstream} upstream, c={c}: the gateway carries "
                    f"{g['rps'] / d['rps']:.0%} of the direct req/s and adds "
                    f"{g['p50_ms'] - d['p50_ms']:.2f} ms at p50")
            if lite:
                line += f"; it serves {g['rps'] / lite['rps']:.1f}× LiteLLM's req/s"
            out.append(line + ".")
    gi, di = pick(rows, "instant", gateway, 32), pick(rows, "instant", "direct", 1)
    pi = pick(rows, "instant", PROXY, 32)
    g1 = pick(rows, "instant", gateway, 1)
    gs, ds = pick(rows, "50 ms", gateway, 32), pick(rows, "50 ms", "direct", 32)
    peak_pss = max(r["pss_mb"] for r in rows if r["target"] == gateway)
    peak = max(r["rss_mb"] for r in rows if r["target"] == gateway)
    out.append(f"- instant upstream, c=32: the barest Flask proxy serves {pi['rps']:.0f} "
               f"req/s at {pi['cpu_per_1k']:.2f} CPU-s per 1k with the host "
               f"{pi['host_busy']:.0f} % busy; the gateway {gi['rps']:.0f} req/s at "
               f"{gi['cpu_per_1k']:.2f} CPU-s, host {gi['host_busy']:.0f} % busy.")
    gp, gt = pick(rows, "instant", GEVENT_PROXY, 32), pick(rows, "instant", "gateway, gthread", 32)
    if gp and gt:
        out.append(
            f"- The same worker class on both sides, instant upstream, c=32: the gateway "
            f"(gevent) serves {gi['rps'] / gp['rps']:.2f}× the req/s of the barest proxy under "
            f"gevent at {gi['cpu_per_1k'] / gp['cpu_per_1k']:.2f}× its CPU per request; "
            f"under gthread, {gt['rps'] / pi['rps']:.2f}× at "
            f"{gt['cpu_per_1k'] / pi['cpu_per_1k']:.2f}×. The gateway under gevent against "
            f"itself under gthread: {gi['rps'] / gt['rps']:.2f}× the req/s at "
            f"{gi['cpu_per_1k'] / gt['cpu_per_1k']:.2f}× the CPU per cancel.")
    pd, p1 = pick(rows, "50 ms", PROXY, 32), pick(rows, "instant", PROXY, 1)
    # (target, holds, measured, the barest proxy in the same run, why not where it fails)
    checks = [
        ("instant upstream, c=32: req/s ≥ 1.0 × the barest proxy's",
         gi["rps"] >= pi["rps"], f"{gi['rps'] / pi['rps']:.2f} ×", f"{pi['rps']:.0f} req/s",
         "requests' Session.request is 42 % of a worker's CPU (py-spy); the proxy pays it "
         "too, and the gateway also checks, stores, shapes, counts and logs"),
        ("instant upstream, c=32: CPU-s per 1k ≤ the barest proxy's",
         gi["cpu_per_1k"] <= pi["cpu_per_1k"], f"{gi['cpu_per_1k'] / pi['cpu_per_1k']:.2f} ×",
         f"{pi['cpu_per_1k']:.2f} CPU-s", "as above"),
        ("instant upstream, c=32: host as busy as with the barest proxy",
         gi["host_busy"] >= pi["host_busy"] - 5, f"{gi['host_busy']:.0f} %",
         f"{pi['host_busy']:.0f} %", "request threads queue for the store's one writer at a "
         "time (py-spy with idle samples); a group commit of the writes and a shorter GIL "
         "switch interval were measured and gained nothing"),
        ("c=1: added p50 over the direct call ≤ 1.5 ms", g1["p50_ms"] - di["p50_ms"] <= 1.5,
         f"{g1['p50_ms'] - di['p50_ms']:.2f} ms", f"adds {p1['p50_ms'] - di['p50_ms']:.2f} ms",
         "the yardstick alone takes most of the budget on this machine"),
        ("50 ms upstream, c=32: ≥ 90 % of direct req/s", gs["rps"] >= 0.9 * ds["rps"],
         f"{gs['rps'] / ds['rps']:.0%}", f"{pd['rps'] / ds['rps']:.0%}",
         "the yardstick misses it too: wrk, the provider and the server share 2 cores"),
        ("50 ms upstream, c=32: p99 ≤ 70 ms", gs["p99_ms"] <= 70, f"{gs['p99_ms']:.1f} ms",
         f"{pd['p99_ms']:.1f} ms", "as above"),
        ("PSS of the whole tree ≤ 100 MB (2 workers, under load)", peak_pss <= 100,
         f"{peak_pss:.0f} MB peak PSS ({peak:.0f} MB RSS)", f"{pi['pss_mb']:.0f} MB PSS", ""),
    ]
    out += ["", "| target | holds | measured | the barest proxy, same run | why not |",
            "| --- | --- | --- | --- | --- |"]
    out += [f"| {name} | {'yes' if ok else '**no**'} | {got} | {proxy} | "
            f"{'' if ok else why} |" for name, ok, got, proxy, why in checks]
    return "\n".join(out)


def chart(rows, path):
    """req/s and p99 per concurrency, one panel per upstream, one line per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    upstreams = ("instant", "50 ms")
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    targets = list(dict.fromkeys(r["target"] for r in rows))
    for col, upstream in enumerate(upstreams):
        for target in targets:
            mine = [r for r in rows if r["upstream"] == upstream and r["target"] == target]
            cs = [r["concurrency"] for r in mine]
            axes[0][col].plot(cs, [r["rps"] for r in mine], marker="o", label=target)
            axes[1][col].plot(cs, [r["p99_ms"] for r in mine], marker="o", label=target)
        axes[0][col].set_title(f"{upstream} upstream: requests per second")
        axes[1][col].set_title(f"{upstream} upstream: p99 latency (ms)")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log", base=2)
            ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
            ax.set_xlabel("concurrent connections")
            ax.set_yscale("log")  # direct to nginx is ~100x anything else
            ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.savefig(path, dpi=110)


def report(rows, args, out):
    gateway = args.gateway_configs[0][0]
    md = [
        "# Benchmarks",
        "",
        f"Made by `bench/run{' --litellm' if args.litellm else ''}` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d}: {os.cpu_count()} cores shared by wrk, the "
        f"fake provider and the gateway; Python {platform.python_version()}; "
        f"{args.warmup} s warm-up and {args.duration} s measured per row; every server up "
        f"throughout and the rows interleaved round by round, {args.rounds} rounds, each "
        "figure the median of the rounds (peak memory: the highest). "
        "Memory and CPU are the gateway's whole process tree (gunicorn master and "
        "workers, LiteLLM's likewise), from /proc: RSS sums each process's resident "
        "pages, so a page the workers share with the master counts three times; PSS "
        "shares it out and so adds up to what the tree really uses. Direct rows have "
        "no gateway, so no memory or CPU.",
        "",
        table(rows),
        "",
        "![req/s and p99 per concurrency](benchmarks.png)",
        "",
        "## Ratios and targets",
        "",
        findings(rows, gateway),
        "",
    ]
    (out / "benchmarks.md").write_text("\n".join(md))
    (out / "benchmarks.json").write_text(json.dumps(rows, indent=1))
    chart(rows, out / "benchmarks.png")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every row, interleaved")
    parser.add_argument("--duration", type=int, default=5, help="seconds measured per row")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per row")
    parser.add_argument("--litellm", action="store_true", help="add LiteLLM's proxy rows")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report again from OUT/benchmarks.json, measuring nothing")
    parser.add_argument("--gateway", action="append", default=[], metavar="NAME=VARIANT",
                        help="another gateway row, e.g. '32 threads=GUNICORN_THREADS=32'")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed: bench/run installs it")
    # The Procfile's gateway (gevent's worker), and the same under gthread, as it ran
    # before (32 threads a worker), measured beside it.
    args.gateway_configs = [("gateway", ""), ("gateway, gthread", "WORKER_CLASS=gthread")]
    args.gateway_configs += [tuple(spec.split("=", 1)) for spec in args.gateway]
    args.out.mkdir(exist_ok=True)
    if args.report_only:
        report(json.loads((args.out / "benchmarks.json").read_text()), args, args.out)
        return
    report(run(args), args, args.out)
    print(f"wrote {args.out / 'benchmarks.md'} and {args.out / 'benchmarks.png'}")


if __name__ == "__main__":
    main()
