"""POST /v1/responses: which provider a create goes to, what is sent, what comes back."""

import json
import re

import pytest

from support import (
    CHAT_ONLY, GATEWAY_KEY, NATIVE, PROVIDER_KEYS, RESPONSES_API, assert_envelope, auth,
    cancel_url, chat_url, create_url, upstream_response,
)


@pytest.fixture
def create(client):
    """POST a create through the gateway with a valid key, as the SDK does."""

    def post(body, provider=None, **kwargs):
        query = {"provider": provider} if provider is not None else {}
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return client.post("/v1/responses", query_string=query, headers=auth(), data=data,
                           content_type="application/json", **kwargs)

    return post


def queued(response_id="resp_new", **fields):
    return upstream_response(response_id, status="queued", **fields)


@pytest.mark.parametrize("provider", RESPONSES_API)
def test_create_forwards_the_body_with_the_prefix_stripped(create, upstream, provider):
    mock = upstream.post(create_url(provider), json=queued(model="m-2025"))
    # In the background only where the provider can cancel it; elsewhere the gateway runs it.
    background = provider in NATIVE
    body = {"model": f"{provider}/m", "input": "hi", "background": background,
            "metadata": {"k": "v"}}

    resp = create(body)

    assert resp.status_code == 200
    answer = resp.get_json()
    assert (answer["id"], answer["provider"], answer["status"]) == ("resp_new", provider, "queued")
    sent = mock.calls[0].request
    assert json.loads(sent.body) == {**body, "model": "m"}
    if provider == "azure":
        assert sent.headers["api-key"] == PROVIDER_KEYS["azure"]
    else:
        assert sent.headers["Authorization"] == f"Bearer {PROVIDER_KEYS[provider]}"
    assert GATEWAY_KEY not in str(sent.headers)


def test_a_hint_forwards_the_model_unchanged(create, upstream):
    mock = upstream.post(create_url("openrouter"), json=queued())

    resp = create({"model": "openai/gpt-4o", "input": "hi"}, provider="openrouter")

    assert resp.get_json()["provider"] == "openrouter"
    assert json.loads(mock.calls[0].request.body)["model"] == "openai/gpt-4o"  # OpenRouter's name


def test_a_hint_that_the_model_repeats_is_stripped(create, upstream):
    mock = upstream.post(create_url("openai"), json=queued())

    create({"model": "openai/gpt-4o-mini", "input": "hi"}, provider="OpenAI")

    assert json.loads(mock.calls[0].request.body)["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("body", [
    {"model": "gpt-4o-mini", "input": "hi"},
    {"model": "nope/gpt-4o-mini"},
    {"model": "openai/"},
    {"model": ["openai/x"]},
    {"input": "hi"},
])
def test_no_provider_named_is_400_on_model(create, upstream, body):
    error = assert_envelope(create(body), 400, "invalid_request_error", param="model")

    assert "openai/gpt-4o-mini" in error["message"]  # it shows the accepted form


def test_a_provider_that_is_not_configured_is_400(make_client, upstream):
    client = make_client(GROQ_API_KEY=None)

    resp = client.post("/v1/responses", json={"model": "groq/llama"}, headers=auth())

    error = assert_envelope(resp, 400, "invalid_request_error", param="model")
    assert "not configured" in error["message"]


def test_an_unknown_hint_is_400_on_provider(create, upstream):
    assert_envelope(create({"model": "x"}, provider="nope"), 400, "invalid_request_error",
                    param="provider")


@pytest.mark.parametrize("stream", ["true", 1, 0, {}])
def test_a_stream_that_is_not_a_boolean_is_400(create, upstream, stream):
    error = assert_envelope(create({"model": "openai/m", "stream": stream}), 400,
                            "invalid_request_error", param="stream")

    assert "true or false" in error["message"]


@pytest.mark.parametrize("stream", [False, None])
def test_stream_false_is_forwarded(create, upstream, stream):
    mock = upstream.post(create_url("openai"), json=queued())

    assert create({"model": "openai/m", "stream": stream}).status_code == 200
    assert json.loads(mock.calls[0].request.body)["stream"] is stream


@pytest.mark.parametrize("body", ["", "{not json", "[]", '"text"', "null", "3",
                                  '{"model": NaN}', b"\xff\xfe",
                                  '{"model": "openai/m", "temperature": 1e400}'])  # no float
def test_a_body_that_is_no_json_object_is_400(create, upstream, body):
    error = assert_envelope(create(body), 400, "invalid_request_error")

    assert "JSON" in error["message"]


def test_a_body_without_content_type_is_still_read(client, upstream):
    upstream.post(create_url("openai"), json=queued())

    resp = client.post("/v1/responses", data='{"model": "openai/m"}', headers=auth())

    assert resp.status_code == 200


@pytest.mark.parametrize("status,calls", [(500, 1), (502, 1), (503, 1), (504, 1), (429, 3)])
def test_a_create_is_not_repeated_once_it_may_have_started(create, upstream, status, calls):
    mock = upstream.post(create_url("openai"), status=status, json={"error": {"message": "x"}})

    resp = create({"model": "openai/m", "background": True})

    assert resp.status_code == (429 if status == 429 else 502)
    assert mock.call_count == calls  # only a 429 (nothing started) is tried again


def test_a_created_response_without_an_id_is_502(create, upstream):
    upstream.post(create_url("openai"), json={"object": "response", "status": "queued"})

    assert_envelope(create({"model": "openai/m"}), 502, "provider_error", code="upstream_error")


def test_upstream_400_on_create_is_passed_on(create, upstream):
    upstream.post(create_url("openai"), status=400, json={"error": {
        "message": "Unsupported parameter: 'temperature'", "param": "temperature",
        "code": "unsupported_parameter"}})

    error = assert_envelope(create({"model": "openai/o3", "temperature": 2}), 400,
                            "invalid_request_error", param="temperature",
                            code="unsupported_parameter")
    assert "openai" in error["message"]


def test_a_created_response_is_cancelled_at_its_provider_without_probing(create, upstream, cancel):
    upstream.post(create_url("vllm"), json=queued("resp_v"))
    create({"model": "vllm/qwen", "background": True})
    upstream.post(cancel_url("vllm", "resp_v"), json=upstream_response("resp_v"))

    resp = cancel("resp_v")

    assert resp.get_json()["provider"] == "vllm"
    assert [c.request.url for c in upstream.calls][1:] == [cancel_url("vllm", "resp_v")]


# Providers with only Chat Completions: the create is translated there and back.

COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1741476542, "model": "m-2025",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Hi there."}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
}


@pytest.mark.parametrize("provider", CHAT_ONLY)
def test_a_create_at_a_chat_only_provider_is_translated(create, upstream, client, provider):
    mock = upstream.post(chat_url(provider), json=COMPLETION)

    resp = create({"model": f"{provider}/m", "input": "Hello", "instructions": "Be nice.",
                   "max_output_tokens": 20})

    assert resp.status_code == 200
    answer = resp.get_json()
    assert re.fullmatch(r"resp_[0-9a-f]{32}", answer["id"])
    assert (answer["provider"], answer["status"], answer["model"]) == (provider, "completed",
                                                                       "m-2025")
    assert answer["output"][0]["content"][0]["text"] == "Hi there."
    assert answer["usage"] == {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}
    sent = mock.calls[0].request
    assert json.loads(sent.body) == {"model": "m", "max_tokens": 20, "messages": [
        {"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hello"}]}
    assert sent.headers["Authorization"] == f"Bearer {PROVIDER_KEYS[provider]}"
    assert GATEWAY_KEY not in str(sent.headers)
    stored = client.get(f"/v1/responses/{answer['id']}", headers=auth())
    assert stored.get_json() == answer  # kept by the store: the provider keeps nothing


@pytest.mark.parametrize("background", [False, True])
def test_a_field_that_cannot_be_translated_is_400_before_any_upstream_call(make_client,
                                                                           upstream,
                                                                           background):
    client = make_client(HOSTED_TOOLS="refuse")  # the operator's rule: refuse, do not drop
    error = assert_envelope(
        client.post("/v1/responses", headers=auth(), json={
            "model": "anthropic/claude", "input": "x", "background": background,
            "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}]}),
        400, "invalid_request_error", param="tools[1].type")

    assert "anthropic" in error["message"] and "web_search" in error["message"]
