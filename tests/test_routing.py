"""Which providers a cancel goes to: the ?provider= hint, or probing in a fixed order."""

import pytest

from support import GATEWAY_KEY, NATIVE, assert_envelope, cancel_url, upstream_response


def test_probing_asks_native_providers_in_order_and_skips_404s(cancel, upstream):
    for provider in NATIVE[:2]:
        upstream.post(cancel_url(provider, "resp_9"), status=404)
    upstream.post(cancel_url("oracle", "resp_9"), json=upstream_response("resp_9"))

    resp = cancel("resp_9")

    assert resp.status_code == 200
    assert resp.get_json()["provider"] == "oracle"
    assert [c.request.url for c in upstream.calls] == [
        cancel_url(p, "resp_9") for p in ["openai", "azure", "oracle"]
    ]  # vllm, after the winner, is never asked


def test_probing_when_every_provider_answers_404(cancel, upstream):
    for provider in NATIVE:
        upstream.post(cancel_url(provider, "resp_9"), status=404)

    error = assert_envelope(cancel("resp_9"), 404, "not_found_error")

    assert "resp_9" in error["message"]
    assert all(provider in error["message"] for provider in NATIVE)


def test_probing_goes_on_past_a_failure_to_find_the_holder(cancel, upstream):
    upstream.post(cancel_url("openai", "r"), status=500)
    upstream.post(cancel_url("azure", "r"), json=upstream_response("r"))

    resp = cancel("r")

    assert resp.status_code == 200
    assert resp.get_json()["provider"] == "azure"


@pytest.mark.parametrize("first,second,status,type_", [
    (500, 400, 502, "provider_error"),
    (400, 500, 400, "invalid_request_error"),
    (429, 502, 429, "rate_limit_error"),
])
def test_probing_answers_the_first_failure_when_none_succeeds(
    cancel, upstream, first, second, status, type_
):
    upstream.post(cancel_url("openai", "r"), status=404)
    upstream.post(cancel_url("azure", "r"), status=first)
    upstream.post(cancel_url("oracle", "r"), status=second)
    upstream.post(cancel_url("vllm", "r"), status=404)

    error = assert_envelope(cancel("r"), status, type_, code=error_code(status))
    assert "azure" in error["message"]


def error_code(status):
    return "upstream_error" if status == 502 else None


def test_no_configured_native_provider_is_501(make_client, upstream):
    client = make_client(**{f"{p.upper()}_API_KEY": None for p in NATIVE}, VLLM_BASE_URL=None)

    resp = client.post("/v1/responses/r/cancel", headers={"Authorization": f"Bearer {GATEWAY_KEY}"})

    assert_envelope(resp, 501, "invalid_request_error", code="unsupported_response_operation")
    assert resp.headers["x-should-retry"] == "false"


def test_probing_skips_unconfigured_providers(make_client, upstream):
    upstream.post(cancel_url("vllm", "r"), json=upstream_response("r"))
    client = make_client(OPENAI_API_KEY=None, AZURE_API_KEY=None, ORACLE_API_KEY=None)

    resp = client.post("/v1/responses/r/cancel", headers={"Authorization": f"Bearer {GATEWAY_KEY}"})

    assert resp.get_json()["provider"] == "vllm"
    assert len(upstream.calls) == 1


def test_hint_goes_straight_to_that_provider(cancel, upstream):
    upstream.post(cancel_url("vllm", "r"), json=upstream_response("r"))

    assert cancel("r", provider="vllm").get_json()["provider"] == "vllm"
    assert len(upstream.calls) == 1


def test_hint_404_is_not_found_without_probing_others(cancel, upstream):
    upstream.post(cancel_url("azure", "r"), status=404)

    assert_envelope(cancel("r", provider="azure"), 404, "not_found_error")
    assert len(upstream.calls) == 1


@pytest.mark.parametrize("hint", ["nope", "", "openai/v1", "x" * 500])
def test_unknown_hint_is_400_on_provider(cancel, upstream, hint):
    resp = cancel("r", provider=hint)

    error = assert_envelope(resp, 400, "invalid_request_error", param="provider")
    assert "openai" in error["message"]  # it lists the known names
    assert len(error["message"]) < 400


def test_hint_for_a_native_provider_that_is_not_configured(make_client, upstream):
    client = make_client(ORACLE_API_KEY=None)

    resp = client.post("/v1/responses/r/cancel?provider=oracle",
                       headers={"Authorization": f"Bearer {GATEWAY_KEY}"})

    error = assert_envelope(resp, 400, "invalid_request_error", param="provider")
    assert "not configured" in error["message"]
