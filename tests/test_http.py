"""HTTP edges: unknown routes, wrong methods, crashes, odd bodies, request ids."""

import io
import json
import re
import threading
import time

import pytest

import providers
from support import GATEWAY_KEY, assert_envelope, cancel_url, create_url, upstream_response

AUTH = {"Authorization": f"Bearer {GATEWAY_KEY}"}


@pytest.mark.parametrize("method,path", [
    ("post", "/v1/nothing"),
    ("get", "/"),
    ("post", "/v1/responses/r/cancel/"),
    ("get", "/v1/responses/r/"),
])
def test_unknown_routes_are_a_json_404(client, method, path):
    resp = getattr(client, method)(path, headers=AUTH)

    error = assert_envelope(resp, 404, "not_found_error")
    assert path in error["message"]


@pytest.mark.parametrize("method,path,allowed", [
    *[(method, "/v1/responses/r/cancel", "POST") for method in ["get", "put", "delete", "patch"]],
    ("post", "/v1/responses/r", "GET"),
    ("get", "/v1/responses", "POST"),
    ("post", "/v1/providers", "GET"),
])
def test_wrong_method_is_a_json_405_with_allow(client, method, path, allowed):
    resp = getattr(client, method)(path, headers=AUTH)

    assert_envelope(resp, 405, "invalid_request_error")
    assert allowed in resp.headers["Allow"]


def test_an_unexpected_exception_is_a_json_500(cancel, monkeypatch, caplog):
    def broken(upstream, response_id):
        raise KeyError("bug")

    monkeypatch.setitem(providers.PROVIDERS, "openai",
                        providers.PROVIDERS["openai"]._replace(cancel=broken))

    resp = cancel("r", provider="openai")

    assert_envelope(resp, 500, "provider_error", code="internal_error")
    assert "KeyError" in caplog.text  # the traceback is logged for the operator


@pytest.mark.parametrize("body,content_type", [
    (None, "application/json"),  # what the official SDK sends
    ("", "application/json"),
    ("{not json", "application/json"),
    ("[]", "application/json"),
    ('{"model": "gpt-4o-mini"}', "application/json"),
    ("a=b", "application/x-www-form-urlencoded"),
])
def test_the_request_body_never_breaks_a_cancel(cancel, upstream, body, content_type):
    upstream.post(cancel_url("openai", "r"), json=upstream_response("r"))

    resp = cancel("r", provider="openai", data=body, content_type=content_type)

    assert resp.status_code == 200


def test_a_sane_request_id_is_echoed(cancel, upstream):
    upstream.post(cancel_url("openai", "r"), json=upstream_response("r"))

    resp = cancel("r", provider="openai", headers={"X-Request-ID": "trace-42.a:b_c"})

    assert resp.headers["X-Request-ID"] == "trace-42.a:b_c"


@pytest.mark.parametrize("incoming", [None, "", "has space", "x" * 129, "new\\nline", "é"])
def test_a_request_id_is_made_when_missing_or_unsafe(client, incoming):
    headers = {} if incoming is None else {"X-Request-ID": incoming}

    resp = client.post("/v1/responses/r/cancel", headers=headers)  # a 401, still with an id

    assert resp.status_code == 401
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])


def test_every_error_carries_a_request_id(client):
    for path in ("/nowhere", "/v1/responses/r/cancel", "/healthz"):
        assert client.get(path).headers["X-Request-ID"]


def test_a_body_over_the_limit_is_a_json_413(make_client, upstream):
    client = make_client(MAX_CONTENT_LENGTH="100")

    resp = client.post("/v1/responses/r/cancel?provider=openai", data="x" * 101,
                       headers=AUTH, content_type="application/json")

    error = assert_envelope(resp, 413, "invalid_request_error")
    assert "100 bytes" in error["message"]
    assert len(upstream.calls) == 0


def test_a_body_at_the_limit_is_fine(make_client, upstream):
    upstream.post(cancel_url("openai", "r"), json=upstream_response("r"))
    client = make_client(MAX_CONTENT_LENGTH="100")

    resp = client.post("/v1/responses/r/cancel?provider=openai", data="x" * 100,
                       headers=AUTH, content_type="application/json")

    assert resp.status_code == 200


# A create's body: no shape of it may hurt a worker (request_body.py).

def nested(depth):
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("body", [
    '{"input": ' + nested(50_000) + "}",  # past the parser's recursion
    '{"input": ' + nested(129) + "}",  # past MAX_NESTING
    '{"metadata": {"a": ' + '{"b": ' * 200 + "1" + "}" * 202,
])
def test_json_nested_too_deep_is_a_400_envelope(client, upstream, body):
    resp = client.post("/v1/responses", data=body, headers=AUTH, content_type="application/json")

    error = assert_envelope(resp, 400, "invalid_request_error")
    assert "deep" in error["message"]


def test_json_nested_within_the_bound_is_forwarded(client, upstream):
    upstream.post(create_url("openai"), json=upstream_response("resp_deep", status="completed"))

    resp = client.post("/v1/responses", headers=AUTH, content_type="application/json",
                       data='{"model": "openai/m", "metadata": {"a": ' + nested(120) + "}}")

    assert resp.status_code == 200
    assert upstream.calls[0].request.body.count(b"[") == 120  # sent as it came


def many(prefix, unit, count, suffix):
    return prefix + ",".join([unit] * count) + suffix


@pytest.mark.parametrize("body", [
    many('{"model": "openai/m", "input": [', "{}", 100_001, "]}"),
    many('{"model": "openai/m", "metadata": [', "1.2345678901234567e300", 100_001, "]}"),
    many('{"model": "openai/m", "metadata": [', '"{"', 100_001, "]}"),  # strings hiding brackets
    many('{"model": "openai/m", "metadata": [', '""', 200_010, "]}"),  # strings alone
    '{"model": "openai/m", "metadata": {' + ",".join(f'"k{i}": 1' for i in range(100_001)) + "}}",
], ids=["objects", "floats", "strings-of-brackets", "empty-strings", "members"])
def test_a_body_of_too_many_values_is_refused_before_it_is_parsed(client, upstream,
                                                                  monkeypatch, body):
    """Parsing a value and encoding it again for the provider costs up to 4 µs: a worker
    held seconds by one 16 MiB body holds every request it serves."""
    import request_body

    parsed = []
    monkeypatch.setattr(request_body, "strict_json", lambda data: parsed.append(data))

    resp = client.post("/v1/responses", data=body, headers=AUTH, content_type="application/json")

    error = assert_envelope(resp, 400, "invalid_request_error")
    assert "more than 100000 JSON values" in error["message"] and parsed == []


def test_a_body_within_the_bound_of_values_is_forwarded(client, upstream):
    upstream.post(create_url("openai"), json=upstream_response("resp_many", status="completed"))
    numbers = [1.2345678901234567e300] * 99_990

    resp = client.post("/v1/responses", headers=AUTH,
                       json={"model": "openai/m", "metadata": numbers})

    assert resp.status_code == 200
    assert json.loads(upstream.calls[0].request.body)["metadata"] == numbers


@pytest.mark.parametrize("text", [
    "if (x) { y[0] = {a, b}; }\n" * 60_000,  # 300,000 brackets and commas
    '\\"{,' * 60_000,  # escaped backslashes and quotes beside them
    "C:\\dir\\" + "[" * 200_000,  # a string that ends in an escaped backslash
])
def test_brackets_and_commas_inside_strings_are_not_values(client, upstream, text):
    """Code in a prompt is full of them: only what is outside strings counts."""
    upstream.post(create_url("openai"), json=upstream_response("resp_code", status="completed"))

    resp = client.post("/v1/responses", headers=AUTH,
                       json={"model": "openai/m", "input": text, "instructions": text[-9:]})

    assert resp.status_code == 200
    assert json.loads(upstream.calls[0].request.body)["input"] == text


@pytest.mark.parametrize("name", ["MAX_BODY_VALUES", "MAX_BODY_OBJECTS"])  # its name before
def test_the_bound_on_values_is_a_setting(make_client, upstream, name):
    client = make_client(**{name: "12"})
    body = {"model": "openai/m", "input": [{"role": "user", "content": "hi"}] * 4}

    error = assert_envelope(client.post("/v1/responses", headers=AUTH, json=body), 400,
                            "invalid_request_error")
    assert "more than 12 JSON values" in error["message"]


def test_a_body_alone_always_fits_and_the_next_waits_for_bytes_given_back():
    from request_body import Bodies

    bodies = Bodies()
    assert bodies.take(50, 10, seconds=0)  # larger than the bound, but alone
    assert not bodies.take(1, 10, seconds=0.05)  # nothing given back in time
    threading.Timer(0.1, bodies.give_back, [50]).start()
    started = time.monotonic()
    assert bodies.take(8, 10, seconds=5)  # given its share once the first gave back
    assert 0.05 < time.monotonic() - started < 4 and bodies.held == 8


LARGE_BODY = {"model": "openai/m", "input": "x" * (2 * 1024 * 1024)}


def test_a_large_body_past_what_its_worker_holds_waits_then_gets_a_503(make_client, upstream):
    """A worker holds BODIES_IN_FLIGHT bytes of large bodies; the next waits up to
    BODY_TIMEOUT, then is told to retry; a request gives back what it held when it ends,
    whether it succeeded or failed."""
    from request_body import BODIES

    client = make_client(BODIES_IN_FLIGHT=str(3 * 1024 * 1024), BODY_TIMEOUT="0.3")
    upstream.post(create_url("openai"), json=upstream_response("resp_big", status="completed"))
    assert BODIES.take(2 * 1024 * 1024, 10**9, seconds=0)  # another request's body
    try:
        resp = client.post("/v1/responses", headers=AUTH, json=LARGE_BODY)
        error = assert_envelope(resp, 503, "provider_error", code="gateway_busy")
        assert resp.headers["Retry-After"] == "1" and "retry" in error["message"]
        assert len(upstream.calls) == 0  # never read, never sent
    finally:
        BODIES.give_back(2 * 1024 * 1024)

    assert client.post("/v1/responses", headers=AUTH, json=LARGE_BODY).status_code == 200
    refused = client.post("/v1/responses", headers=AUTH, content_type="application/json",
                          data='{"model": "openai/m", "input": [' + "1," * 600_000 + "1]}")
    assert refused.status_code == 400
    assert BODIES.held == 0  # both gave back what they held


class Trickle(io.BytesIO):
    """A body that arrives a read at a time, 10 ms apart."""

    def read(self, size=-1):
        time.sleep(0.01)
        return super().read(size)


def test_the_wait_for_a_share_is_not_counted_against_the_body_s_own_time(make_client,
                                                                         upstream):
    """BODY_TIMEOUT bounds how long the client takes to send; a body that first waited for
    its worker's share of BODIES_IN_FLIGHT still has all of it."""
    from request_body import BODIES

    client = make_client(BODIES_IN_FLIGHT=str(3 * 1024 * 1024), BODY_TIMEOUT="0.6")
    upstream.post(create_url("openai"), json=upstream_response("resp_big", status="completed"))
    data = json.dumps(LARGE_BODY).encode()  # 32 reads of 64 KiB: about 0.35 s
    assert BODIES.take(2 * 1024 * 1024, 10**9, seconds=0)
    threading.Timer(0.4, BODIES.give_back, [2 * 1024 * 1024]).start()

    resp = client.post("/v1/responses", headers=AUTH, input_stream=Trickle(data),
                       content_type="application/json", content_length=len(data))

    assert resp.status_code == 200
    assert BODIES.held == 0
