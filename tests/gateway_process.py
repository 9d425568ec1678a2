"""Run the gateway as a platform would: the Procfile's command, in a clean environment."""

import os
import shlex
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def procfile_command():
    """The web command from the Procfile, as a platform would run it."""
    kind, _, command = (ROOT / "Procfile").read_text().strip().partition(":")
    assert kind == "web"
    return shlex.split(command)


def clean_env(**variables):
    """A minimal environment: none of the developer's own keys or proxies leak in."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8", **variables}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gateway:
    """A running gunicorn: its URL, its log file and its process."""

    def __init__(self, url, log, proc):
        self.url, self.log, self.proc = url, log, proc

    def rss_bytes(self):
        """Resident memory of the master and all its workers."""
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        pids += [int(pid) for pid in children.split()]
        total = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def read_log_until(self, needle, times=1, seconds=10):
        """The log's text once `needle` is in it `times` times (lines land after replies)."""
        deadline = time.monotonic() + seconds
        while True:
            text = self.log.read_text()
            if text.count(needle) >= times or time.monotonic() > deadline:
                return text
            time.sleep(0.05)


@contextmanager
def run_gateway(log_dir, gunicorn_args="", **env):
    """Start the Procfile's gunicorn on a free port of 127.0.0.1 with `env` (and more
    command-line settings in `gunicorn_args`); stop it after.

    Unless `env` names a STORE_URL, the response store is a SQLite file in `log_dir`.
    """
    port = free_port()
    log = Path(log_dir) / f"gunicorn-{port}.log"
    env = clean_env(**{"GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port} {gunicorn_args}",
                       "STORE_URL": f"sqlite:///{log_dir}/gateway.sqlite3", **env})
    with open(log, "wb") as out:
        proc = subprocess.Popen(procfile_command(), cwd=ROOT, env=env, stdout=out, stderr=out)
    gateway = Gateway(f"http://127.0.0.1:{port}", log, proc)
    try:
        _wait_until_healthy(gateway)
        yield gateway
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _wait_until_healthy(gateway, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gateway.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited: {gateway.log.read_text()}")
        try:
            if requests.get(f"{gateway.url}/healthz", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError("gunicorn did not become healthy")
