"""GET /v1/providers: every provider in the dict, what it can do, and never a secret."""

from providers import PROVIDERS
from support import (
    NATIVE, PROVIDER_KEYS, RESPONSES_API, assert_envelope, auth, base_url,
)


def test_lists_every_provider_in_openai_list_shape(client):
    resp = client.get("/v1/providers", headers=auth())

    assert resp.status_code == 200
    body = resp.get_json()
    assert body["object"] == "list"
    assert [p["id"] for p in body["data"]] == list(PROVIDERS)
    for entry in body["data"]:
        assert entry == {
            "id": entry["id"], "object": "provider", "configured": True,
            "responses_api": entry["id"] in RESPONSES_API,
            "native_cancel": entry["id"] in NATIVE,
            "cancel": "native" if entry["id"] in NATIVE else "gateway",
        }


def test_configured_follows_the_environment(make_client):
    client = make_client(OPENAI_API_KEY=None, VLLM_API_KEY=None, VLLM_BASE_URL=None)

    data = client.get("/v1/providers", headers=auth()).get_json()["data"]

    configured = {p["id"]: p["configured"] for p in data}
    assert not configured["openai"] and not configured["vllm"] and configured["azure"]
    assert {p["id"]: p["native_cancel"] for p in data}["openai"]  # capability stays


def test_never_shows_keys_or_urls(make_client):
    client = make_client(AZURE_BASE_URL="https://user:pass@contoso.openai.azure.com/openai/v1")

    text = client.get("/v1/providers", headers=auth()).get_data(as_text=True)

    for name, key in PROVIDER_KEYS.items():
        assert key not in text and base_url(name) not in text
    assert "pass@" not in text and "contoso" not in text


def test_needs_a_gateway_key(client):
    assert_envelope(client.get("/v1/providers"), 401, "authentication_error")
