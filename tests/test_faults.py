"""Faults at the provider, through real gunicorn and a fake provider on 127.0.0.1:
each ends as the right envelope, in time, retried only as the retry rule says,
and the gateway serves the next request normally."""

import time
import uuid

import pytest
import requests

from gateway_process import free_port, run_gateway

GATEWAY_KEY = "gw-faults-key-0001"
PROVIDER_KEY = "sk-faults-provider-0001"
UPSTREAM_TIMEOUT = 2  # seconds; short, so a hanging provider costs the suite little
WORKER_TIMEOUT = 3 * UPSTREAM_TIMEOUT + 30  # what gunicorn.conf.py derives from it


@pytest.fixture(scope="module")
def gateway(provider, tmp_path_factory):
    with run_gateway(
        tmp_path_factory.mktemp("faults"),
        GATEWAY_API_KEYS=GATEWAY_KEY,
        OPENAI_API_KEY=PROVIDER_KEY,
        OPENAI_BASE_URL=provider.base_url,
        VLLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",  # nothing listens there
        UPSTREAM_TIMEOUT=str(UPSTREAM_TIMEOUT),
        WEB_CONCURRENCY="2",
    ) as gateway:
        yield gateway


def cancel(gateway, response_id, provider="openai"):
    """POST a cancel; return the response and how long it took."""
    start = time.monotonic()
    resp = requests.post(f"{gateway.url}/v1/responses/{response_id}/cancel",
                         params={"provider": provider},
                         headers={"Authorization": f"Bearer {GATEWAY_KEY}"}, timeout=120)
    return resp, time.monotonic() - start


def assert_envelope(resp, status, type_, code):
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"] == "application/json"
    error = resp.json()["error"]
    assert (error["type"], error["code"]) == (type_, code)
    assert GATEWAY_KEY not in resp.text and PROVIDER_KEY not in resp.text
    return error


@pytest.fixture(autouse=True)
def still_serving_afterwards(gateway):
    yield
    resp, _ = cancel(gateway, f"resp_{uuid.uuid4().hex}")
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("fault,status,type_,code,calls,at_least", [
    ("hang", 504, "provider_error", "upstream_timeout", 1, UPSTREAM_TIMEOUT),
    ("midbody", 502, "provider_error", "upstream_error", 1, 0),
    ("s500", 502, "provider_error", "upstream_error", 1, 0),
    ("s502", 502, "provider_error", "upstream_error", 3, 0.5),  # backoff: 0 s, then 0.5 s
    ("s503", 502, "provider_error", "upstream_error", 3, 0.5),
    ("s503ra", 502, "provider_error", "upstream_error", 3, 2),  # Retry-After: 1, twice
    ("s429ra", 429, "rate_limit_error", None, 3, 2),
    ("s401", 502, "provider_error", "upstream_error", 1, 0),
    ("s400key", 400, "invalid_request_error", None, 1, 0),
    ("badjson", 502, "provider_error", "upstream_error", 1, 0),
    ("array", 502, "provider_error", "upstream_error", 1, 0),
    ("big", 502, "provider_error", "upstream_error", 1, 0),
    ("bigchunked", 502, "provider_error", "upstream_error", 1, 0),
])
def test_provider_fault(gateway, provider, fault, status, type_, code, calls, at_least):
    response_id = f"{fault}-{uuid.uuid4().hex}"

    resp, took = cancel(gateway, response_id)

    error = assert_envelope(resp, status, type_, code)
    assert "openai" in error["message"]
    assert provider.calls_for(response_id) == calls
    assert at_least <= took < WORKER_TIMEOUT  # waited as told, and ended before gunicorn would
    if fault == "s429ra":
        assert resp.headers["Retry-After"] == "1"


def test_provider_refusing_connections(gateway):
    resp, took = cancel(gateway, "resp_1", provider="vllm")

    error = assert_envelope(resp, 502, "provider_error", "upstream_error")
    assert error["message"] == "could not connect to vllm"
    assert took < WORKER_TIMEOUT


def test_no_key_reaches_the_log(gateway):
    log = gateway.read_log_until("request_id=")

    assert "could not connect to vllm" in log or "cancel at" in log  # the log is the right one
    assert GATEWAY_KEY not in log and PROVIDER_KEY not in log
