"""GET /v1/responses/{id}/input_items: from the store where the provider keeps no input
(stateless and Chat-only providers, gateway runs), forwarded where it does; OpenAI's list
shape, with limit, order and after."""

import re

import pytest

from support import (
    GATEWAY_KEY, OTHER_GATEWAY_KEY, RETRIEVE, assert_envelope, auth, base_url, chat_url,
    create_url, upstream_response,
)

COMPLETION = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1741476542, "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Hi there."}}],
}
CONVERSATION = [
    {"role": "user", "content": "What is the weather?"},
    {"type": "message", "role": "assistant", "id": "msg_given",
     "content": [{"type": "output_text", "text": "Let me look."}]},
    {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
]


def items_url(provider, response_id):
    return f"{base_url(provider)}/responses/{response_id}/input_items"


def listed(client, response_id, key=GATEWAY_KEY, **query):
    return client.get(f"/v1/responses/{response_id}/input_items", query_string=query,
                      headers=auth(key))


def create_at_groq(client, upstream, response_id, input_):
    upstream.post(create_url("groq"), json=upstream_response(response_id, status="completed"))
    assert client.post("/v1/responses", headers=auth(),
                       json={"model": "groq/m", "input": input_}).status_code == 200


def test_a_string_input_is_one_user_message_with_one_input_text_part(client, upstream):
    upstream.post(chat_url("anthropic"), json=COMPLETION)
    created = client.post("/v1/responses", headers=auth(),
                          json={"model": "anthropic/m", "input": "Hello"}).get_json()

    page = listed(client, created["id"]).get_json()

    [item] = page["data"]
    assert re.fullmatch(r"msg_[0-9a-f]{32}", item["id"])
    assert item == {"id": item["id"], "type": "message", "role": "user",
                    "content": [{"type": "input_text", "text": "Hello"}]}
    assert page == {"object": "list", "data": [item], "first_id": item["id"],
                    "last_id": item["id"], "has_more": False}


def test_items_keep_their_kind_and_order_newest_first_by_default(client, upstream):
    create_at_groq(client, upstream, "resp_conv", CONVERSATION)

    newest_first = listed(client, "resp_conv").get_json()["data"]
    oldest_first = listed(client, "resp_conv", order="asc").get_json()["data"]

    assert oldest_first == newest_first[::-1]
    assert [i["type"] for i in oldest_first] == ["message", "message", "function_call",
                                                 "function_call_output"]
    assert oldest_first[0]["content"] == [{"type": "input_text", "text": "What is the weather?"}]
    assert oldest_first[1]["id"] == "msg_given"  # an id the client gave is kept
    assert oldest_first[2]["id"].startswith("fc_") and oldest_first[3]["call_id"] == "call_1"
    assert len({i["id"] for i in oldest_first}) == 4


def test_limit_and_after_page_through_the_items(client, upstream):
    create_at_groq(client, upstream, "resp_pages", CONVERSATION)
    everything = listed(client, "resp_pages", order="asc").get_json()["data"]

    first = listed(client, "resp_pages", order="asc", limit=3).get_json()
    rest = listed(client, "resp_pages", order="asc", limit=3, after=first["last_id"]).get_json()

    assert (first["data"], first["has_more"]) == (everything[:3], True)
    assert (rest["data"], rest["has_more"]) == (everything[3:], False)
    assert (rest["first_id"], rest["last_id"]) == (everything[3]["id"], everything[3]["id"])
    empty = listed(client, "resp_pages", after=everything[0]["id"]).get_json()  # desc: none after
    assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None,
                     "has_more": False}


@pytest.mark.parametrize("query,param", [
    ({"limit": 0}, "limit"), ({"limit": 101}, "limit"), ({"limit": "ten"}, "limit"),
    ({"order": "newest"}, "order"), ({"after": "msg_nowhere"}, "after"),
])
def test_a_bad_query_is_400_naming_it(client, upstream, query, param):
    create_at_groq(client, upstream, "resp_q", "hi")

    assert_envelope(listed(client, "resp_q", **query), 400, "invalid_request_error", param=param)


def test_a_native_response_is_listed_by_its_provider(client, upstream):
    upstream.post(create_url("openai"), json=upstream_response("resp_nat", status="completed"))
    client.post("/v1/responses", headers=auth(), json={"model": "openai/m", "input": "x"})
    answer = {"object": "list", "data": [{"id": "msg_up", "type": "message"}],
              "first_id": "msg_up", "last_id": "msg_up", "has_more": False}
    upstream.get(items_url("openai", "resp_nat"), json=answer)

    resp = listed(client, "resp_nat", limit=5, order="asc", after="msg_0")

    assert resp.get_json() == answer
    sent = upstream.calls[-1].request
    assert sent.url == f"{items_url('openai', 'resp_nat')}?limit=5&order=asc&after=msg_0"
    assert sent.headers["Authorization"] == "Bearer sk-openai-secret-0001"


def test_an_unknown_id_is_probed_where_input_is_kept(client, upstream):
    upstream.get(items_url("openai", "resp_far"), status=404)
    upstream.get(items_url("azure", "resp_far"), json={"object": "list", "data": [],
                                                       "has_more": False})

    resp = listed(client, "resp_far")

    assert resp.get_json()["data"] == [] and resp.get_json()["first_id"] is None
    assert [c.request.url.split("?")[0] for c in upstream.calls] == [
        items_url(p, "resp_far") for p in RETRIEVE[:2]]


def test_a_gateway_run_and_a_stream_keep_their_input(streaming_client, streamer):
    run = streaming_client.post("/v1/responses", headers=auth(), json={
        "model": "anthropic/words-3-0", "input": "run-input", "background": True,
        "stream": True})
    streamed = streaming_client.post("/v1/responses", headers=auth(), json={
        "model": "groq/words-3-0", "input": "stream-input", "stream": True})
    assert streamed.status_code == 200 and streamed.get_data()  # read to its end
    run = {"id": run.get_data(as_text=True).split('"id": "', 1)[1].split('"', 1)[0]}

    streamed_id = streamer.streams_for("stream-input")[-1].response_id
    for response_id, text in [(run["id"], "run-input"), (streamed_id, "stream-input")]:
        [item] = listed(streaming_client, response_id).get_json()["data"]
        assert item["content"] == [{"type": "input_text", "text": text}]


def test_another_keys_or_a_deleted_responses_items_are_404(client, upstream):
    create_at_groq(client, upstream, "resp_priv", "secret question")

    assert_envelope(listed(client, "resp_priv", key=OTHER_GATEWAY_KEY), 404, "not_found_error")
    assert client.delete("/v1/responses/resp_priv", headers=auth()).status_code == 200
    assert_envelope(listed(client, "resp_priv"), 404, "not_found_error")
    store = client.application.extensions["gateway"].store
    assert store.input_items("resp_priv") is None  # gone with it, not only hidden
