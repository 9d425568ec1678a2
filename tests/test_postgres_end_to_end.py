"""Two gateways on one PostgreSQL database, each as the Procfile starts it (gevent, two
workers), against a provider on 127.0.0.1 that streams slowly and records whether its
client went away (a cancel on one reaching the run on the other is in
test_background_end_to_end.py, for Redis and PostgreSQL): a killed host's runs end
by lease on the other, thousands of runs at once, the database restarted under load, and a
held lock that stalls no stream."""

import asyncio
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from gateway_process import run_gateway
from store.postgres_backend import POOL_WAIT
from test_background_end_to_end import GATEWAY_KEY, poll, running, sdk, worker_pids

pytestmark = pytest.mark.burst  # pytest.ini: never two at once

SECRET = "a-secret-both-hosts-share-0001"


def env(streamer, database_url, **extra):
    return {"GATEWAY_API_KEYS": GATEWAY_KEY, "GATEWAY_SECRET": SECRET,
            "STORE_URL": database_url, "WEB_CONCURRENCY": "2",
            "ANTHROPIC_API_KEY": "sk-ant-pg", "ANTHROPIC_BASE_URL": streamer.base_url,
            "GROQ_API_KEY": "gsk-pg", "GROQ_BASE_URL": streamer.base_url, **extra}


def stored_statuses(database_url):
    with psycopg.connect(database_url) as db:
        return dict(db.execute("SELECT status, count(*) FROM responses GROUP BY status"))


def test_a_killed_hosts_runs_end_failed_by_lease_on_the_other_none_lost_or_doubled(
        streamer, database_url, tmp_path_factory):
    shared = env(streamer, database_url, BACKGROUND_LEASE="2")
    with run_gateway(tmp_path_factory.mktemp("survivor"), **shared) as survivor:
        with run_gateway(tmp_path_factory.mktemp("doomed"), **shared) as doomed:
            ids = [sdk(doomed).responses.create(model="anthropic/words-1000-20",
                                                input=f"pg-kill-{i}", background=True).id
                   for i in range(4)]
            for response_id in ids:
                poll(survivor, response_id, running)
            for pid in [doomed.proc.pid, *worker_pids(doomed)]:
                os.kill(pid, signal.SIGKILL)  # the whole host goes, as a lost machine would
            doomed.proc.wait(timeout=10)
        lost = [poll(survivor, rid, lambda r: r.status != "in_progress", seconds=10)
                for rid in ids]

    assert [r.status for r in lost] == ["failed"] * 4
    assert all(r.error.code == "run_lost" and r.output_text for r in lost)
    for i in range(4):
        assert len(streamer.streams_for(f"pg-kill-{i}")) == 1  # never started again


async def create_run(url, key):
    """(status, id) of one background create, on a connection of its own."""
    host, port = url.split("//")[1].split(":")
    body = json.dumps({"model": "groq/words-2-0", "input": key, "background": True}).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST /v1/responses HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                 f"{GATEWAY_KEY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                 .encode() + body)
    head, _, rest = (await reader.read()).partition(b"\r\n\r\n")
    writer.close()
    status = int(head.split()[1])
    return status, json.loads(rest).get("id") if status == 200 else rest[:200]


async def create_runs(urls, count):
    limit = asyncio.Semaphore(200)

    async def one(i):
        async with limit:
            return await create_run(urls[i % len(urls)], f"pg-many-{i}")

    return await asyncio.gather(*(one(i) for i in range(count)))


def test_two_thousand_background_runs_across_two_hosts_all_complete_once(
        streamer, database_url, tmp_path_factory):
    shared = env(streamer, database_url)
    with run_gateway(tmp_path_factory.mktemp("m1"), **shared) as first, \
            run_gateway(tmp_path_factory.mktemp("m2"), **shared) as second:
        created = asyncio.run(create_runs([first.url, second.url], 2000))
        assert [status for status, _ in created] == [200] * 2000, created[:3]
        deadline = time.monotonic() + 120
        while stored_statuses(database_url).get("completed", 0) < 2000:
            assert time.monotonic() < deadline, stored_statuses(database_url)
            time.sleep(0.5)

    assert len({response_id for _, response_id in created}) == 2000
    assert stored_statuses(database_url) == {"completed": 2000}
    keys = [s.key for s in streamer.streams if str(s.key).startswith("pg-many-")]
    assert len(keys) == len(set(keys)) == 2000  # each run streamed once


def test_the_database_restarted_under_load_costs_envelopes_then_service_resumes(
        streamer, postgres, database_url, tmp_path_factory):
    if not hasattr(postgres, "process"):
        pytest.skip("TEST_DATABASE_URL names a server these tests cannot restart")
    with run_gateway(tmp_path_factory.mktemp("restart"), **env(streamer, database_url)) as gw:
        before = sdk(gw).responses.create(model="anthropic/words-3-0", input="pg-before")
        answers, stop = [], threading.Event()

        def load():
            """Calls that need the store: a retrieve, and a create the gateway runs."""
            auth = {"Authorization": f"Bearer {GATEWAY_KEY}"}
            while not stop.is_set():
                for resp in (
                        requests.get(f"{gw.url}/v1/responses/{before.id}", timeout=30,
                                     headers=auth),
                        requests.post(f"{gw.url}/v1/responses", timeout=30, headers=auth,
                                      json={"model": "groq/words-2-0", "input": "pg-load",
                                            "background": True})):
                    answers.append((resp.status_code, resp.headers.get("Content-Type"),
                                    resp.json()))

        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                pool.submit(load)
            time.sleep(0.5)
            postgres.stop()
            time.sleep(POOL_WAIT + 2)  # no answer for POOL_WAIT: calls fail, 503
            postgres.start()
            resumed_at = len(answers)
            time.sleep(2)
            stop.set()

        statuses = {status for status, _, _ in answers}
        assert statuses <= {200, 503}, statuses
        assert 503 in statuses  # the store was down, and it said so
        for status, content_type, body in answers:
            assert content_type == "application/json"
            if status == 503:
                assert body["error"]["code"] == "store_unavailable"
        assert [s for s, _, _ in answers[resumed_at + 8:]] == [200] * len(
            answers[resumed_at + 8:])  # service resumed by itself
        assert len(answers) > resumed_at + 8
        # What was stored before is still there.
        assert sdk(gw).responses.retrieve(before.id).output_text == "w0 w1 w2"


def test_a_held_lock_in_the_database_does_not_stall_the_workers_streams(
        streamer, database_url, tmp_path_factory):
    """Another client holds the responses table locked for 2 s; a create that must write
    waits for it, while a stream the same worker serves goes on delta by delta."""
    with run_gateway(tmp_path_factory.mktemp("lock"),
                     **env(streamer, database_url, WEB_CONCURRENCY="1")) as gateway:
        url, auth = f"{gateway.url}/v1/responses", {"Authorization": f"Bearer {GATEWAY_KEY}"}
        with requests.post(url, headers=auth, stream=True, timeout=30, json={
                "model": "anthropic/words-100-50", "input": "pg-stall", "stream": True}) as resp:
            lines = resp.iter_lines()
            while b"output_text.delta" not in next(lines):
                pass
            with psycopg.connect(database_url) as db, ThreadPoolExecutor(1) as pool:
                db.execute("LOCK TABLE responses IN EXCLUSIVE MODE")  # until the commit
                writer = pool.submit(requests.post, url, headers=auth, timeout=30, json={
                    "model": "groq/words-2-0", "input": "pg-stall-create",
                    "background": True})
                gaps, last = [], time.monotonic()
                while len(gaps) < 40:  # 2 s of deltas, 50 ms apart
                    if b"output_text.delta" in next(lines):
                        gaps.append(time.monotonic() - last)
                        last = time.monotonic()
                assert not writer.done()  # the create still waits for the lock
                db.commit()
                created = writer.result(timeout=10)

    assert max(gaps) < 0.5  # a stalled worker would send nothing while the lock is held
    assert created.status_code == 200 and created.json()["status"] == "queued"
