"""Load through real gunicorn (2 workers): 1,000 cancels at concurrency 32, three times;
then 500 create, cancel, cancel-again lifecycles on the SQLite store.

Every cancel must be answered 200 with its own id, the provider must see each
id exactly once (nothing lost, nothing doubled), and the memory of gunicorn's
process tree must not keep growing from one round to the next. Speed is not
asserted here; bench/ measures it.
"""

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from gateway_process import run_gateway

pytestmark = pytest.mark.burst  # pytest.ini: never two at once

GATEWAY_KEY = "gw-load-key-0001"
REQUESTS, CONCURRENCY, ROUNDS = 1000, 32, 3
GROWTH_ALLOWED = 1.10  # round 3 may use at most 10 % more memory than round 1


@pytest.fixture(scope="module")
def gateway(provider, tmp_path_factory):
    with run_gateway(
        tmp_path_factory.mktemp("load"),
        GATEWAY_API_KEYS=GATEWAY_KEY,
        OPENAI_API_KEY="sk-load-provider-0001",
        OPENAI_BASE_URL=provider.base_url,
        WEB_CONCURRENCY="2",
    ) as gateway:
        yield gateway


def run_round(gateway, ids):
    """Cancel every id, CONCURRENCY at a time; return (status, returned id) per id."""
    local = threading.local()

    def cancel(response_id):
        if not hasattr(local, "session"):
            local.session = requests.Session()  # keep-alive, as real clients do
        resp = local.session.post(f"{gateway.url}/v1/responses/{response_id}/cancel",
                                  headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                                  timeout=30)
        return resp.status_code, resp.json().get("id")

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(cancel, ids))


def test_a_thousand_cancels_at_concurrency_32(gateway, provider):
    memory = []
    for round_ in range(ROUNDS):
        ids = [f"resp_load{round_}_{i}_{uuid.uuid4().hex[:8]}" for i in range(REQUESTS)]

        answers = run_round(gateway, ids)

        assert answers == [(200, response_id) for response_id in ids]
        seen = Counter(r.path.split("/")[3] for r in provider.received
                       if f"/resp_load{round_}_" in r.path)
        assert seen == Counter(ids)  # each id reached the provider exactly once
        memory.append(gateway.rss_bytes())
    assert not [r for r in provider.received if GATEWAY_KEY in str(r.headers)]  # never forwarded
    print(f"gunicorn tree RSS after each round: {[m // 2**20 for m in memory]} MiB")
    assert memory[-1] <= memory[0] * GROWTH_ALLOWED, memory


PAIRS = 500


def test_create_then_cancel_twice_on_the_sqlite_store_at_concurrency_32(gateway, provider):
    """Each create is stored by one worker and cancelled through either; the repeat cancel
    is answered from the store. Under this load no store write may fail (the log says
    'was not stored' when one does)."""
    local = threading.local()

    def post(path, **kwargs):
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session.post(f"{gateway.url}/v1/responses{path}", timeout=30,
                                  headers={"Authorization": f"Bearer {GATEWAY_KEY}"}, **kwargs)

    def lifecycle(i):
        created = post("", json={"model": "openai/m", "input": f"load {i}", "background": True})
        rid = created.json()["id"]
        first, second = post(f"/{rid}/cancel"), post(f"/{rid}/cancel")
        return rid, [r.status_code for r in (created, first, second)], second.json()["status"]

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(lifecycle, range(PAIRS)))

    assert [codes for _, codes, _ in results] == [[200, 200, 200]] * PAIRS
    assert {status for _, _, status in results} == {"cancelled"}
    ids = [rid for rid, _, _ in results]
    assert len(set(ids)) == PAIRS
    cancels = Counter(r.path.split("/")[3] for r in provider.received
                      if r.path.endswith("/cancel") and r.path.split("/")[3] in set(ids))
    assert cancels == Counter(ids)  # one upstream cancel each: every repeat came from the store
    assert "was not stored" not in gateway.log.read_text()
