"""Every provider in the dict: native ones cancel upstream; for an id the gateway does not
run, the others answer 501."""

import pytest

from providers import PROVIDERS
from support import (
    GATEWAY_KEY, NATIVE, PROVIDER_KEYS, RESPONSES_API, RETRIEVE, assert_envelope, cancel_url,
    upstream_response,
)

OTHERS = [name for name in PROVIDERS if name not in NATIVE]


def test_the_dict_holds_every_provider_in_scope():
    assert list(PROVIDERS) == [
        "openai", "azure", "anthropic", "gemini", "groq", "openrouter", "deepseek", "zai",
        "xai", "minimax", "xiaomi", "opencodego", "oracle", "ollama", "bailian", "vllm",
    ]
    assert [name for name, ops in PROVIDERS.items() if ops.cancel] == NATIVE
    assert [name for name, ops in PROVIDERS.items() if ops.retrieve] == RETRIEVE
    assert [name for name, ops in PROVIDERS.items() if ops.responses_api] == RESPONSES_API
    assert all(ops.create and ops.stream for ops in PROVIDERS.values())  # create anywhere


@pytest.mark.parametrize("provider", NATIVE)
def test_native_cancel_posts_to_the_provider_with_its_own_key(cancel, upstream, provider):
    mock = upstream.post(cancel_url(provider, "resp_123"), json=upstream_response())

    resp = cancel("resp_123", provider=provider)

    assert resp.status_code == 200
    assert resp.get_json()["provider"] == provider
    sent = mock.calls[0].request
    assert sent.method == "POST"
    assert sent.url == cancel_url(provider, "resp_123")
    if provider == "azure":
        assert sent.headers["api-key"] == PROVIDER_KEYS["azure"]
        assert "Authorization" not in sent.headers
    else:
        assert sent.headers["Authorization"] == f"Bearer {PROVIDER_KEYS[provider]}"
    assert GATEWAY_KEY not in str(sent.headers)


@pytest.mark.parametrize("provider", OTHERS)
def test_provider_without_native_cancel_answers_501(cancel, upstream, provider):
    resp = cancel("resp_123", provider=provider)

    error = assert_envelope(
        resp, 501, "invalid_request_error", code="unsupported_response_operation"
    )
    assert provider in error["message"]
    assert resp.headers["x-should-retry"] == "false"
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("provider", OTHERS)
def test_capability_does_not_depend_on_configuration(make_client, upstream, provider):
    client = make_client(**{f"{provider.upper()}_API_KEY": None})

    resp = client.post(
        f"/v1/responses/resp_1/cancel?provider={provider}",
        headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
    )

    assert_envelope(resp, 501, "invalid_request_error", code="unsupported_response_operation")


def test_default_base_url_is_used_when_none_is_set(make_client, upstream):
    mock = upstream.post("https://api.openai.com/v1/responses/r/cancel", json=upstream_response())
    client = make_client(OPENAI_BASE_URL=None)

    resp = client.post("/v1/responses/r/cancel?provider=openai",
                       headers={"Authorization": f"Bearer {GATEWAY_KEY}"})

    assert resp.status_code == 200
    assert mock.call_count == 1


def test_base_url_override_and_trailing_slash(make_client, upstream):
    mock = upstream.post("http://127.0.0.1:9/v1/responses/r/cancel", json=upstream_response())
    client = make_client(OPENAI_BASE_URL="http://127.0.0.1:9/v1/")

    resp = client.post("/v1/responses/r/cancel?provider=openai",
                       headers={"Authorization": f"Bearer {GATEWAY_KEY}"})

    assert resp.status_code == 200
    assert mock.call_count == 1


def test_keyless_self_hosted_provider_sends_no_authorization(make_client, upstream):
    mock = upstream.post(cancel_url("vllm", "r"), json=upstream_response())
    client = make_client(VLLM_API_KEY=None)

    resp = client.post("/v1/responses/r/cancel?provider=vllm",
                       headers={"Authorization": f"Bearer {GATEWAY_KEY}"})

    assert resp.status_code == 200
    assert "Authorization" not in mock.calls[0].request.headers


def test_provider_hint_is_case_insensitive(cancel, upstream):
    upstream.post(cancel_url("openai", "r"), json=upstream_response())

    assert cancel("r", provider="OpenAI").status_code == 200
