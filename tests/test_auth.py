"""Bearer auth: only the gateway's own keys pass, and none of them travels upstream."""

import hmac

import pytest

from support import (
    GATEWAY_KEY, OTHER_GATEWAY_KEY, PROVIDER_KEYS, assert_envelope, cancel_url, upstream_response,
)


@pytest.mark.parametrize("authorization", [
    None,
    "",
    "Bearer",
    "Bearer ",
    GATEWAY_KEY,  # no scheme
    f"Basic {GATEWAY_KEY}",
])
def test_refused_without_a_bearer_key_and_upstream_is_not_called(client, upstream, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}

    resp = client.post("/v1/responses/resp_1/cancel?provider=openai", headers=headers)

    error = assert_envelope(resp, 401, "authentication_error")
    assert "Bearer" in error["message"]
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("token", [
    "wrong-key",
    f"{GATEWAY_KEY}x",
    GATEWAY_KEY[:-1],
    f"{GATEWAY_KEY},{OTHER_GATEWAY_KEY}",
    "ключ",
    PROVIDER_KEYS["openai"],  # a provider key is not a gateway key
])
def test_refused_with_an_unknown_key_and_upstream_is_not_called(client, upstream, token):
    resp = client.post("/v1/responses/resp_1/cancel?provider=openai",
                       headers={"Authorization": f"Bearer {token}"})

    error = assert_envelope(resp, 401, "authentication_error", code="invalid_api_key")
    assert token not in error["message"]
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("authorization", [
    f"Bearer {GATEWAY_KEY}",
    f"Bearer {OTHER_GATEWAY_KEY}",
    f"bearer {GATEWAY_KEY}",
    f"Bearer  {GATEWAY_KEY} ",
])
def test_any_configured_key_is_accepted(client, upstream, authorization):
    mock = upstream.post(cancel_url("openai", "resp_1"), json=upstream_response("resp_1"))

    resp = client.post("/v1/responses/resp_1/cancel?provider=openai",
                       headers={"Authorization": authorization})

    assert resp.status_code == 200
    sent = mock.calls[0].request.headers
    assert sent["Authorization"] == f"Bearer {PROVIDER_KEYS['openai']}"
    assert GATEWAY_KEY not in str(sent) and OTHER_GATEWAY_KEY not in str(sent)


def test_auth_disabled_lets_anyone_in(make_client, upstream):
    upstream.post(cancel_url("openai", "resp_1"), json=upstream_response("resp_1"))
    client = make_client(GATEWAY_API_KEYS=None, GATEWAY_AUTH="disabled")

    assert client.post("/v1/responses/resp_1/cancel?provider=openai").status_code == 200


def test_healthz_needs_no_key_and_calls_no_provider(client, upstream):
    resp = client.get("/healthz")

    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok"}
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("token", [GATEWAY_KEY, OTHER_GATEWAY_KEY, "wrong-key"])
def test_every_key_is_compared_in_constant_time_every_time(client, upstream, monkeypatch, token):
    compared = []

    def compare_digest(a, b):
        compared.append(len(a) == len(b) == 32)  # SHA-256 digests: equal lengths
        return real_compare_digest(a, b)

    real_compare_digest = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", compare_digest)
    upstream.post(cancel_url("openai", "r"), json=upstream_response("r"))
    upstream.assert_all_requests_are_fired = token != "wrong-key"

    client.post("/v1/responses/r/cancel?provider=openai",
                headers={"Authorization": f"Bearer {token}"})

    assert compared == [True, True]  # both configured keys, even after a match
