"""Many streams and runs at once on one instance, as the Procfile starts it (gevent's worker),
and what must not stall them: a store write that waits for its lock."""

import asyncio
import fcntl
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from gateway_process import run_gateway

pytestmark = pytest.mark.burst  # pytest.ini: never two at once

GATEWAY_KEY = "gw-many-key-0001"
RUNS = 500  # gateway runs cancelled at once at a close-delimited provider
STOPPED_WITHIN = 5  # seconds; a run not stopped streams on for 200 s


def env(streamer, **extra):
    return {"GATEWAY_API_KEYS": GATEWAY_KEY, "ANTHROPIC_API_KEY": "sk-ant-many",
            "ANTHROPIC_BASE_URL": streamer.base_url, "GROQ_API_KEY": "gsk-many",
            "GROQ_BASE_URL": streamer.base_url, **extra}


async def stream(url, model, key):
    """(seconds to the first delta, whether the stream completed) for one streaming create."""
    host, port = url.split("//")[1].split(":")
    body = json.dumps({"model": model, "input": key, "stream": True}).encode()
    started, first = time.monotonic(), None
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"POST /v1/responses HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                 f"{GATEWAY_KEY}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                 .encode() + body)
    seen = b""
    while chunk := await reader.read(65536):
        seen = seen[-64:] + chunk
        if first is None and b"output_text.delta" in seen:
            first = time.monotonic() - started
        if b"response.completed" in seen:
            break
    writer.close()
    return first, b"response.completed" in seen


async def streams(url, count, model, prefix="many"):
    return await asyncio.gather(*(stream(url, model, f"{prefix}-{i}") for i in range(count)))


def test_a_thousand_streams_at_once_all_complete(streamer, tmp_path):
    with run_gateway(tmp_path, **env(streamer)) as gateway:
        results = asyncio.run(streams(gateway.url, 1000, "anthropic/words-10-100"))

    assert sum(done for _, done in results) == 1000
    assert all(first is not None for first, _ in results)
    assert len({s.key for s in streamer.streams if s.key.startswith("many-")}) == 1000


def test_hundreds_of_streams_at_once_from_a_provider_over_tls_all_complete(routes, tmp_path):
    """Streams opened at once need TLS connections of their own, each verified with the
    one CA bundle, read once at start (test_streaming.py)."""
    tls = routes.fake("chunked-tls")
    with run_gateway(tmp_path, **env(tls, GROQ_BASE_URL=routes.base_url("chunked-tls"),
                                     REQUESTS_CA_BUNDLE=str(routes.ca_bundle))) as gateway:
        results = asyncio.run(streams(gateway.url, 300, "groq/words-10-100", "tls-many"))

    assert sum(done for _, done in results) == 300
    assert len({s.key for s in tls.streams if s.key.startswith("tls-many-")}) == 300


def test_a_store_write_waiting_for_its_lock_does_not_stall_the_workers_streams(streamer,
                                                                              tmp_path):
    """Another process holds the SQLite store's write lock for 2 s; a create that must write
    waits for it, while the stream the same worker serves goes on delta by delta."""
    with run_gateway(tmp_path, **env(streamer, WEB_CONCURRENCY="1")) as gateway:
        url, auth = f"{gateway.url}/v1/responses", {"Authorization": f"Bearer {GATEWAY_KEY}"}
        with requests.post(url, headers=auth, stream=True, timeout=30, json={
                "model": "anthropic/words-100-50", "input": "stall-stream", "stream": True}) as resp:
            lines = resp.iter_lines()
            while b"output_text.delta" not in next(lines):
                pass
            with open(tmp_path / "gateway.sqlite3.lock", "a+") as lock, \
                    ThreadPoolExecutor(1) as pool:
                fcntl.flock(lock, fcntl.LOCK_EX)  # the turn of another process's writer
                writer = pool.submit(requests.post, url, headers=auth, timeout=30, json={
                    "model": "groq/words-2-0", "input": "stall-create", "background": True})
                gaps, last = [], time.monotonic()
                while len(gaps) < 40:  # 2 s of deltas, 50 ms apart
                    if b"output_text.delta" in next(lines):
                        gaps.append(time.monotonic() - last)
                        last = time.monotonic()
                assert not writer.done()  # the create still waits for the lock
                fcntl.flock(lock, fcntl.LOCK_UN)
                created = writer.result(timeout=10)

    assert max(gaps) < 0.5  # a stalled worker would send nothing while the lock is held
    assert created.status_code == 200 and created.json()["status"] == "queued"



async def call(url, method, path, body=None):
    """(status, JSON body) of one request on a connection of its own."""
    host, port = url.split("//")[1].split(":")
    payload = json.dumps(body).encode() if body is not None else b""
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                 f"{GATEWAY_KEY}\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
                 .encode() + payload)
    head, _, rest = (await reader.read()).partition(b"\r\n\r\n")
    writer.close()
    return int(head.split()[1]), json.loads(rest)


def test_hundreds_of_runs_at_a_close_delimited_provider_all_stop_on_cancel(tmp_path):
    """The stop holds for many runs at once where the provider ends streams by closing.

    500, not thousands: this fake is a thread per stream in the test process, sharing its
    GIL with the clients, and sees a client go only at its next write (100 ms apart), so
    its own lag reaches a second on a busy machine. A run left going would stream for
    200 s: the test asks that every stream stop within a few seconds of its cancel.
    How soon (within 1 s) is bench/concurrency.py's to measure, with 2,000 runs against a
    provider in a process of its own that sees each close at once."""
    from fake_streaming import FakeStreamingProvider

    with FakeStreamingProvider("close") as closing, \
            run_gateway(tmp_path, **env(closing)) as gateway:
        async def create_all():
            return await asyncio.gather(*(call(gateway.url, "POST", "/v1/responses", {
                "model": "anthropic/words-2000-100", "input": f"close-{i}", "background": True})
                for i in range(RUNS)))

        created = asyncio.run(create_all())
        deadline = time.monotonic() + 30
        while len(closing.streams) < RUNS:
            assert time.monotonic() < deadline, len(closing.streams)
            time.sleep(0.1)

        async def cancel_all():
            async def cancel(response_id):
                answer = await call(gateway.url, "POST", f"/v1/responses/{response_id}/cancel")
                return answer, time.monotonic()
            return await asyncio.gather(*(cancel(body["id"]) for _, body in created))

        cancels = asyncio.run(cancel_all())
        deadline = time.monotonic() + STOPPED_WITHIN
        while sum(s.client_left for s in closing.streams) < RUNS and time.monotonic() < deadline:
            time.sleep(0.1)

    assert [status for status, _ in created] == [200] * RUNS
    assert [(s, b["status"]) for (s, b), _ in cancels] == [(200, "cancelled")] * RUNS
    by_key = {s.key: s for s in closing.streams}
    lags = [by_key[f"close-{i}"].gone_at - answered for i, (_, answered) in enumerate(cancels)
            if by_key[f"close-{i}"].gone_at is not None]
    assert len(lags) == RUNS, f"{RUNS - len(lags)} provider streams still open"
    assert max(lags) < STOPPED_WITHIN, f"slowest stop {max(lags):.2f} s after its cancel"
    assert not any(s.finished for s in closing.streams)
