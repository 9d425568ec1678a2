"""POST /v1/responses/input_tokens and /v1/responses/compact: forwarded to a provider that
has them, with what the body continues expanded as for a create; a 501 naming the
provider everywhere else, never an estimate; per key; /v1/responses/{id} unharmed."""

import json

import pytest

from providers import PROVIDERS
from support import (
    OTHER_GATEWAY_KEY, PROVIDER_KEYS, assert_envelope, auth, base_url, create_url,
    retrieve_url, upstream_response,
)

OPERATIONS = {"input_tokens": {"object": "response.input_tokens", "input_tokens": 11},
              "compact": {"id": "cmp_1", "object": "response.compaction", "created_at": 1,
                          "output": [{"type": "compaction", "encrypted_content": "gAAA"}],
                          "usage": {"input_tokens": 40, "output_tokens": 9}}}
HAS = ["openai", "azure"]
LACKS = [name for name in PROVIDERS if name not in HAS]


def sent(upstream, index=-1):
    return json.loads(upstream.calls[index].request.body)


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("provider", HAS)
def test_it_is_forwarded_where_the_provider_has_it(client, upstream, provider, operation):
    upstream.post(f"{base_url(provider)}/responses/{operation}", json=OPERATIONS[operation])

    resp = client.post(f"/v1/responses/{operation}", headers=auth(), json={
        "model": f"{provider}/gpt-5", "input": "Hello", "instructions": "Be brief.",
        "tools": [{"type": "function", "name": "f", "parameters": {}}]})

    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == OPERATIONS[operation]
    assert sent(upstream) == {"model": "gpt-5", "input": "Hello", "instructions": "Be brief.",
                              "tools": [{"type": "function", "name": "f", "parameters": {}}]}
    request = upstream.calls[-1].request
    key = request.headers.get("api-key") or request.headers["Authorization"].split()[-1]
    assert key == PROVIDER_KEYS[provider]  # the provider's key, never the client's


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize("provider", LACKS)
def test_elsewhere_it_is_a_501_naming_the_provider_with_no_call(client, upstream, provider,
                                                               operation):
    resp = client.post(f"/v1/responses/{operation}", headers=auth(),
                       json={"model": f"{provider}/m", "input": "Hello"})

    error = assert_envelope(resp, 501, "invalid_request_error",
                            code="unsupported_response_operation")
    assert error["message"].startswith(provider)
    assert resp.headers["x-should-retry"] == "false"
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("answer", [
    {"object": "response.input_tokens"},
    {"object": "response.input_tokens", "input_tokens": "11"},
    {"object": "response.input_tokens", "input_tokens": True},
    {"object": "response.input_tokens", "input_tokens": -1},
])
def test_a_count_the_provider_did_not_give_is_a_502_not_a_guess(client, upstream, answer):
    upstream.post(f"{base_url('openai')}/responses/input_tokens", json=answer)

    resp = client.post("/v1/responses/input_tokens", headers=auth(),
                       json={"model": "openai/m", "input": "Hello"})

    assert_envelope(resp, 502, "provider_error", code="upstream_error")


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_conversation_is_expanded_and_is_the_callers_own(client, upstream, operation):
    made = client.post("/v1/conversations", headers=auth(), json={
        "items": [{"role": "user", "content": "Earlier"}]}).get_json()
    upstream.post(f"{base_url('openai')}/responses/{operation}", json=OPERATIONS[operation])

    ok = client.post(f"/v1/responses/{operation}", headers=auth(), json={
        "model": "openai/m", "input": "Now", "conversation": made["id"]})
    foreign = client.post(f"/v1/responses/{operation}", headers=auth(OTHER_GATEWAY_KEY),
                          json={"model": "openai/m", "input": "Now",
                                "conversation": made["id"]})

    assert ok.status_code == 200, ok.get_json()
    body = sent(upstream)
    assert "conversation" not in body
    assert [item["content"] for item in body["input"]] == [
        [{"type": "input_text", "text": "Earlier"}], "Now"]
    assert_envelope(foreign, 404, "not_found_error")
    assert len(upstream.calls) == 1  # the other key's call never left
    # Counting or compacting adds nothing to the conversation.
    items = client.get(f"/v1/conversations/{made['id']}/items", headers=auth()).get_json()
    assert len(items["data"]) == 1


def test_another_keys_previous_response_is_not_counted(client, upstream):
    upstream.post(create_url("openai"), json=upstream_response("resp_mine", status="completed"))
    client.post("/v1/responses", headers=auth(), json={"model": "openai/m", "input": "hi"})

    resp = client.post("/v1/responses/input_tokens", headers=auth(OTHER_GATEWAY_KEY), json={
        "model": "openai/m", "input": "more", "previous_response_id": "resp_mine"})

    # As for a create: OpenAI's 400 for a previous response it does not know.
    assert_envelope(resp, 400, "invalid_request_error", param="previous_response_id",
                    code="previous_response_not_found")
    assert len(upstream.calls) == 1


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_wrong_key_or_body_is_refused_before_any_call(client, upstream, operation):
    path = f"/v1/responses/{operation}"

    assert_envelope(client.post(path, json={"model": "openai/m"}), 401, "authentication_error")
    assert_envelope(client.post(path, headers=auth(), json={"input": "x"}), 400,
                    "invalid_request_error", param="model")
    assert_envelope(client.post(path, headers=auth(), data="[1]",
                                content_type="application/json"), 400, "invalid_request_error")
    assert len(upstream.calls) == 0


@pytest.mark.parametrize("response_id", ["input_tokens", "compact"])
def test_a_response_with_such_an_id_is_still_retrieved_and_cancelled(client, upstream,
                                                                    response_id):
    upstream.get(retrieve_url("openai", response_id),
                 json=upstream_response(response_id, status="in_progress"))
    upstream.post(f"{retrieve_url('openai', response_id)}/cancel",
                  json=upstream_response(response_id))

    got = client.get(f"/v1/responses/{response_id}?provider=openai", headers=auth())
    cancelled = client.post(f"/v1/responses/{response_id}/cancel?provider=openai",
                            headers=auth())

    assert (got.status_code, got.get_json()["id"]) == (200, response_id)
    assert (cancelled.status_code, cancelled.get_json()["status"]) == (200, "cancelled")


def test_a_compact_is_never_sent_twice_a_count_may_be(client, upstream):
    """A compact is a model call: after a 503 it may have run, so it is not repeated. A
    count makes nothing: it is asked again, as a retrieve is."""
    count, compact = (f"{base_url('openai')}/responses/{op}" for op in OPERATIONS)
    busy = {"status": 503, "json": {"error": {"message": "busy", "type": "server_error"}}}
    upstream.post(compact, **busy)
    upstream.post(count, **busy)
    upstream.post(count, json=OPERATIONS["input_tokens"])
    compacted = client.post("/v1/responses/compact", headers=auth(),
                            json={"model": "openai/m", "input": "x"})
    counted = client.post("/v1/responses/input_tokens", headers=auth(),
                          json={"model": "openai/m", "input": "x"})

    assert compacted.status_code == 502
    assert (counted.status_code, counted.get_json()) == (200, OPERATIONS["input_tokens"])
    assert [call.request.url for call in upstream.calls] == [compact, count, count]
