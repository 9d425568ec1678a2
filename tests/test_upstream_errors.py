"""How every way a provider can fail reaches the client: always the envelope."""

import logging
import socket

import pytest
import requests

from providers.upstream import MAX_BODY_BYTES
from support import (
    GATEWAY_KEY, PROVIDER_KEYS, assert_envelope, auth, cancel_url, create_url, upstream_response,
)

URL = cancel_url("openai", "resp_123")


def openai_error(message, type_="invalid_request_error", param=None, code=None):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def test_upstream_404_is_not_found(cancel, upstream):
    upstream.post(URL, status=404, json=openai_error("No response found with id 'resp_123'."))

    error = assert_envelope(cancel(provider="openai"), 404, "not_found_error")
    assert "resp_123" in error["message"] and "openai" in error["message"]


@pytest.mark.parametrize("status", [400, 409, 422])
def test_upstream_4xx_keeps_its_status_and_message(cancel, upstream, status):
    upstream.post(URL, status=status, json=openai_error(
        "Cannot cancel a completed response.", param="response_id", code="invalid_state"))

    error = assert_envelope(cancel(provider="openai"), status, "invalid_request_error",
                            param="response_id", code="invalid_state")
    assert error["message"] == "openai: Cannot cancel a completed response."


def test_upstream_4xx_without_a_json_body_still_says_what_happened(cancel, upstream):
    upstream.post(URL, status=400, body="<html>bad request</html>")

    error = assert_envelope(cancel(provider="openai"), 400, "invalid_request_error")
    assert error["message"] == "openai answered HTTP 400"


def test_upstream_429_passes_retry_after_on(cancel, upstream):
    mock = upstream.post(URL, status=429, headers={"Retry-After": "1"},
                         json=openai_error("Rate limit reached", type_="requests"))

    resp = cancel(provider="openai")

    assert_envelope(resp, 429, "rate_limit_error")
    assert resp.headers["Retry-After"] == "1"
    assert mock.call_count == 3  # the first try and two retries


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_auth_failure_is_the_gateways_problem(cancel, upstream, status):
    upstream.post(URL, status=status, json=openai_error(
        f"Incorrect API key provided: {PROVIDER_KEYS['openai']}.", code="invalid_api_key"))

    resp = cancel(provider="openai")

    error = assert_envelope(resp, 502, "provider_error", code="upstream_error")
    assert "openai" in error["message"] and "credentials" in error["message"]
    assert PROVIDER_KEYS["openai"] not in resp.get_data(as_text=True)


def test_provider_key_echoed_in_an_upstream_message_is_scrubbed(cancel, upstream):
    upstream.post(URL, status=400, json=openai_error(f"bad key {PROVIDER_KEYS['openai']}"))

    resp = cancel(provider="openai")

    assert_envelope(resp, 400, "invalid_request_error")
    assert PROVIDER_KEYS["openai"] not in resp.get_data(as_text=True)
    assert "[redacted]" in resp.get_json()["error"]["message"]


@pytest.mark.parametrize("status,calls", [(500, 1), (501, 1), (502, 3), (503, 3), (504, 3)])
def test_upstream_5xx_is_a_bad_gateway_after_the_allowed_retries(cancel, upstream, status, calls):
    mock = upstream.post(URL, status=status, body="upstream trouble")

    error = assert_envelope(cancel(provider="openai"), 502, "provider_error", code="upstream_error")

    assert error["message"] == f"openai answered HTTP {status}"
    assert mock.call_count == calls


def test_a_retried_503_that_recovers_is_a_success(cancel, upstream):
    upstream.post(URL, status=503)
    upstream.post(URL, json=upstream_response())

    resp = cancel(provider="openai")

    assert resp.status_code == 200
    assert len(upstream.calls) == 2


@pytest.mark.parametrize("failure,status,code", [
    (requests.ConnectionError("refused"), 502, "upstream_error"),
    (requests.ConnectTimeout("slow to connect"), 502, "upstream_error"),
    (requests.ReadTimeout("slow to answer"), 504, "upstream_timeout"),
])
def test_network_failures(cancel, upstream, failure, status, code):
    upstream.post(URL, body=failure)

    error = assert_envelope(cancel(provider="openai"), status, "provider_error", code=code)
    assert "openai" in error["message"]


@pytest.mark.parametrize("body,content_type", [
    ("{not json", "application/json"),
    ("", "application/json"),
    ("[1, 2, 3]", "application/json"),
    ('"a string"', "application/json"),
    ('{"id": "x", "usage": {"cost": NaN}}', "application/json"),
    ('{"id": "x", "created_at": Infinity}', "application/json"),
    ('{"id": "x", "usage": {"cost": -1e999}}', "application/json"),
    ("<html>oops</html>", "text/html"),
])
def test_a_2xx_that_is_not_a_json_object_is_a_bad_gateway(cancel, upstream, body, content_type):
    upstream.post(URL, body=body, content_type=content_type)

    assert_envelope(cancel(provider="openai"), 502, "provider_error", code="upstream_error")


def test_a_2xx_with_fields_of_the_wrong_type_is_a_bad_gateway(cancel, upstream):
    upstream.post(URL, json=upstream_response(output="not a list", created_at="yesterday"))

    error = assert_envelope(cancel(provider="openai"), 502, "provider_error", code="upstream_error")
    assert "created_at" in error["message"] and "output" in error["message"]


@pytest.mark.parametrize("declared", [True, False])
def test_an_oversized_body_is_refused(cancel, upstream, declared):
    big = b'{"id": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}'
    headers = {} if declared else {"Transfer-Encoding": "chunked"}
    upstream.post(URL, body=big, headers=headers, auto_calculate_content_length=declared)

    error = assert_envelope(cancel(provider="openai"), 502, "provider_error", code="upstream_error")
    assert "MiB" in error["message"]


@pytest.mark.parametrize("length", ["abc", "-1", ""])
def test_a_malformed_content_length_does_not_crash(cancel, upstream, length):
    upstream.post(URL, body=b'{"id": "x"}', headers={"Content-Length": length},
                  auto_calculate_content_length=False)

    resp = cancel(provider="openai")

    assert resp.status_code == 200  # the body is read and judged as it is
    assert resp.get_json()["id"] == "resp_123"


def test_a_redirect_is_not_followed(cancel, upstream):
    upstream.post(URL, status=307, headers={"Location": "https://elsewhere.example/steal"})

    error = assert_envelope(cancel(provider="openai"), 502, "provider_error", code="upstream_error")
    assert error["message"] == "openai answered HTTP 307"
    assert len(upstream.calls) == 1


def logged(caplog, request_id):
    """The log lines of one request."""
    return [r.getMessage() for r in caplog.records if f"request {request_id}:" in r.getMessage()]


@pytest.mark.parametrize("stream", [False, True])
def test_a_create_that_fails_is_logged_with_what_lay_under_it(make_client, caplog, stream):
    with socket.socket() as closed:  # a port nothing listens on: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    client = make_client(OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")

    with caplog.at_level(logging.WARNING):
        resp = client.post("/v1/responses", json={"model": "openai/gpt-4o", "input": "hi",
                                                  "stream": stream},
                           headers={**auth(), "X-Request-ID": "req-refused"})

    assert_envelope(resp, 502, "provider_error", code="upstream_error")
    operation = "stream" if stream else "create"
    assert logged(caplog, "req-refused") == [
        f"request req-refused: {operation} at openai failed: could not connect to openai "
        "(ConnectionError < MaxRetryError < NewConnectionError < ConnectionRefusedError)"]
    assert PROVIDER_KEYS["openai"] not in caplog.text and GATEWAY_KEY not in caplog.text


@pytest.mark.parametrize("failure,line", [
    (requests.ReadTimeout("slow"), "openai did not answer within 20s (ReadTimeout)"),
    (requests.ConnectionError("refused"), "could not connect to openai (ConnectionError)"),
])
def test_a_failed_cancel_is_logged_once(cancel, upstream, caplog, failure, line):
    upstream.post(URL, body=failure)

    with caplog.at_level(logging.WARNING):
        cancel(provider="openai", headers={"X-Request-ID": "req-once"})

    assert logged(caplog, "req-once") == [f"request req-once: cancel at openai failed: {line}"]


def test_a_refusal_is_logged_with_the_providers_words(client, upstream, caplog):
    upstream.post(create_url("openai"), status=400,
                  json={"error": {"message": "Unknown model: gpt-0", "type": "invalid"}})

    with caplog.at_level(logging.WARNING):
        client.post("/v1/responses", json={"model": "openai/gpt-0", "input": "hi"},
                    headers={**auth(), "X-Request-ID": "req-400"})

    assert logged(caplog, "req-400") == [
        "request req-400: create at openai failed: openai: Unknown model: gpt-0"]
