"""Conversations kept by the gateway: the Conversations API in OpenAI's shapes, each seen
only by its key, and `conversation` on a create at every provider (its items sent first,
its turn appended when the response ends)."""

import json
import re
import threading

import pytest

from support import (
    CHAT_ONLY, OTHER_GATEWAY_KEY, assert_envelope, auth, chat_url, create_url, retrieve_url,
    upstream_response,
)

HELLO = {"type": "message", "role": "user", "content": "Hello"}


def chat_answer(content):
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}]}


def said(text, item_id="msg_out"):
    """An assistant message as a Responses API provider answers it."""
    return {"type": "message", "id": item_id, "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def new_conversation(client, key=None, **body):
    resp = client.post("/v1/conversations", headers=auth(*([key] if key else [])), json=body)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def items_of(client, conversation_id, key=None, **query):
    resp = client.get(f"/v1/conversations/{conversation_id}/items",
                      query_string={"order": "asc", "limit": 100, **query},
                      headers=auth(*([key] if key else [])))
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def texts(page):
    """Each message's text, in order: what a turn reads as."""
    return [part.get("text") for item in page["data"] for part in item["content"]]


def create(client, body, key=None):
    return client.post("/v1/responses", headers=auth(*([key] if key else [])), json=body)


def sent(upstream, index=-1):
    return json.loads(upstream.calls[index].request.body)


# The Conversations API itself, in OpenAI's shapes.

def test_a_conversation_is_created_read_updated_and_deleted_in_openais_shapes(client):
    made = new_conversation(client, items=[HELLO], metadata={"topic": "demo"})

    assert re.fullmatch(r"conv_[0-9a-f]{48}", made["id"])
    assert (made["object"], made["metadata"]) == ("conversation", {"topic": "demo"})
    assert isinstance(made["created_at"], int)
    path = f"/v1/conversations/{made['id']}"
    assert client.get(path, headers=auth()).get_json() == made
    updated = client.post(path, headers=auth(), json={"metadata": {"topic": "other"}})
    assert updated.get_json() == {**made, "metadata": {"topic": "other"}}
    assert client.delete(path, headers=auth()).get_json() == {
        "id": made["id"], "object": "conversation.deleted", "deleted": True}
    assert_envelope(client.get(path, headers=auth()), 404, "not_found_error")
    assert_envelope(client.get(f"{path}/items", headers=auth()), 404, "not_found_error")


def test_items_are_added_listed_in_pages_fetched_and_deleted(client):
    made = new_conversation(client, items=[HELLO])
    path = f"/v1/conversations/{made['id']}/items"
    added = client.post(path, headers=auth(), json={"items": [
        {"role": "assistant", "content": "Hi."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Bye"}]},
    ]}).get_json()

    assert added["object"] == "list" and added["has_more"] is False
    assert [item["role"] for item in added["data"]] == ["assistant", "user"]
    assert all(item["id"].startswith("msg_") for item in added["data"])
    assert added["data"][0]["content"] == [{"type": "output_text", "text": "Hi."}]
    assert texts(items_of(client, made["id"])) == ["Hello", "Hi.", "Bye"]
    newest = client.get(path, headers=auth(), query_string={"limit": 2}).get_json()
    assert texts(newest) == ["Bye", "Hi."] and newest["has_more"] is True  # desc by default
    rest = items_of(client, made["id"], order="desc", after=newest["last_id"])
    assert texts(rest) == ["Hello"] and rest["has_more"] is False
    one = added["data"][0]
    assert client.get(f"{path}/{one['id']}", headers=auth()).get_json() == one
    left = client.delete(f"{path}/{one['id']}", headers=auth())
    assert left.get_json()["id"] == made["id"] and left.get_json()["object"] == "conversation"
    assert texts(items_of(client, made["id"])) == ["Hello", "Bye"]
    assert_envelope(client.get(f"{path}/{one['id']}", headers=auth()), 404, "not_found_error")
    assert_envelope(client.get(path, headers=auth(), query_string={"after": "msg_nope"}),
                    400, "invalid_request_error", param="after")


def test_another_keys_conversation_is_answered_as_one_nobody_holds(client, upstream):
    made = new_conversation(client, items=[HELLO])
    item_id = items_of(client, made["id"])["data"][0]["id"]

    def calls(conversation_id):
        base = f"/v1/conversations/{conversation_id}"
        return [("get", base, None), ("post", base, {"metadata": {}}),
                ("delete", base, None), ("get", f"{base}/items", None),
                ("post", f"{base}/items", {"items": [HELLO]}),
                ("get", f"{base}/items/{item_id}", None),
                ("delete", f"{base}/items/{item_id}", None),
                ("post", "/v1/responses", None)]

    unknown_id = "conv_" + "0" * 48
    for (method, path, body), (_, unknown_path, _) in zip(calls(made["id"]), calls(unknown_id)):
        if path == "/v1/responses":  # a create in it, at a provider: never asked
            foreign = create(client, {"model": "openai/m", "input": "hi",
                                      "conversation": made["id"]}, OTHER_GATEWAY_KEY)
            nobodys = create(client, {"model": "openai/m", "input": "hi",
                                      "conversation": {"id": unknown_id}}, OTHER_GATEWAY_KEY)
        else:
            foreign = getattr(client, method)(path, headers=auth(OTHER_GATEWAY_KEY), json=body)
            nobodys = getattr(client, method)(unknown_path, headers=auth(OTHER_GATEWAY_KEY),
                                              json=body)
        assert_envelope(foreign, 404, "not_found_error")
        assert_envelope(nobodys, 404, "not_found_error")
        assert (foreign.get_json()["error"]["message"].replace(made["id"], "ID")
                == nobodys.get_json()["error"]["message"].replace(unknown_id, "ID")), path
    assert len(upstream.calls) == 0
    assert texts(items_of(client, made["id"])) == ["Hello"]  # untouched by the other key


@pytest.mark.parametrize("path, body, param", [
    ("/v1/conversations", {"items": "Hello"}, "items"),
    ("/v1/conversations", {"items": [42]}, "items[0]"),
    ("/v1/conversations", {"items": [{"role": "robot", "content": "x"}]}, "items[0].role"),
    ("/v1/conversations", {"items": [{"role": "user", "content": 7}]}, "items[0].content"),
    ("/v1/conversations", {"items": [HELLO] * 21}, "items"),
    ("/v1/conversations", {"metadata": {"k": 1}}, "metadata"),
    ("/v1/conversations", {"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ("ITEMS", {"items": []}, "items"),
    ("ITEMS", {}, "items"),
    ("ITEMS", {"items": [{"type": 3}]}, "items[0].type"),
    ("CONVERSATION", {"metadata": "x"}, "metadata"),
])
def test_items_and_metadata_of_a_wrong_shape_are_a_400_naming_the_parameter(client, path,
                                                                           body, param):
    made = new_conversation(client)
    path = {"ITEMS": f"/v1/conversations/{made['id']}/items",
            "CONVERSATION": f"/v1/conversations/{made['id']}"}.get(path, path)

    assert_envelope(client.post(path, headers=auth(), json=body), 400,
                    "invalid_request_error", param=param)
    assert items_of(client, made["id"])["data"] == []


def test_a_conversation_holds_at_most_its_bound_and_says_so(make_client, upstream):
    client = make_client(MAX_CONVERSATION_ITEMS="3", MAX_ITEMS_PER_ADD="2")
    made = new_conversation(client, items=[HELLO, HELLO])
    path = f"/v1/conversations/{made['id']}/items"

    assert_envelope(client.post(path, headers=auth(), json={"items": [HELLO] * 3}), 400,
                    "invalid_request_error", param="items")  # past what one add may carry
    assert_envelope(client.post(path, headers=auth(), json={"items": [HELLO] * 2}), 400,
                    "invalid_request_error", param="items")  # past what it may hold
    assert client.post(path, headers=auth(), json={"items": [HELLO]}).status_code == 200
    # A create's turn adds its input and an output: no room left, and no provider call.
    full = create(client, {"model": "anthropic/m", "input": "x", "conversation": made["id"]})
    assert_envelope(full, 400, "invalid_request_error", param="conversation")
    assert len(items_of(client, made["id"])["data"]) == 3


@pytest.mark.parametrize("body, param", [
    ({"conversation": "CONV", "previous_response_id": "resp_1"}, "conversation"),
    ({"conversation": 7}, "conversation"),
    ({"conversation": {"name": "CONV"}}, "conversation"),
    ({"conversation": "CONV", "store": False}, "store"),
])
def test_a_create_naming_a_conversation_wrongly_is_a_400(client, upstream, body, param):
    made = new_conversation(client, items=[HELLO])
    body = json.loads(json.dumps(body).replace("CONV", made["id"]))

    resp = create(client, {"model": "anthropic/m", "input": "x", **body})

    assert_envelope(resp, 400, "invalid_request_error", param=param)
    assert len(upstream.calls) == 0


# A create in a conversation, at every provider.

@pytest.mark.parametrize("provider", CHAT_ONLY)
def test_a_chat_only_provider_reads_the_conversation_and_its_turns_are_appended(
        client, upstream, provider):
    made = new_conversation(client, items=[
        {"role": "developer", "content": "Be brief."}, HELLO])
    upstream.post(chat_url(provider), json=chat_answer("Hi there."))
    first = create(client, {"model": f"{provider}/m", "input": "Weather?",
                            "conversation": made["id"]})
    upstream.post(chat_url(provider), json=chat_answer("Sunny."))
    second = create(client, {"model": f"{provider}/m", "input": "Tomorrow?",
                             "conversation": {"id": made["id"]}})

    assert first.status_code == 200 and second.status_code == 200, second.get_json()
    messages = sent(upstream, 1)["messages"]
    assert (messages[0]["role"], messages[0]["content"]) == ("system", "Be brief.")
    assert [(m["role"], m["content"]) for m in messages[1:]] == [
        ("user", "Hello"), ("user", "Weather?"), ("assistant", "Hi there."),
        ("user", "Tomorrow?")]
    assert texts(items_of(client, made["id"])) == [
        "Be brief.", "Hello", "Weather?", "Hi there.", "Tomorrow?", "Sunny."]
    # Each response's own input items are its turn's alone.
    own = client.get(f"/v1/responses/{second.get_json()['id']}/input_items",
                     headers=auth()).get_json()
    assert texts(own) == ["Tomorrow?"]


def test_a_native_provider_gets_the_conversation_expanded_and_no_conversation_field(
        client, upstream):
    made = new_conversation(client, items=[HELLO])
    upstream.post(create_url("openai"), json=upstream_response(
        "resp_c1", status="completed", output=[said("Hi.")]))

    resp = create(client, {"model": "openai/m", "input": "More?", "conversation": made["id"]})

    assert resp.status_code == 200, resp.get_json()
    body = sent(upstream)
    assert "conversation" not in body
    assert body["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
        {"role": "user", "content": "More?"}]
    assert texts(items_of(client, made["id"])) == ["Hello", "More?", "Hi."]


def test_a_background_response_at_its_provider_appends_its_turn_once_when_seen_ended(
        client, upstream):
    made = new_conversation(client)
    upstream.post(create_url("openai"), json=upstream_response("resp_bg", status="queued"))
    assert create(client, {"model": "openai/m", "input": "Long task", "background": True,
                           "conversation": made["id"]}).status_code == 200
    assert items_of(client, made["id"])["data"] == []  # not ended: nothing yet

    done = upstream_response("resp_bg", status="completed", output=[said("Done.")])
    upstream.get(retrieve_url("openai", "resp_bg"), json=done)
    upstream.get(retrieve_url("openai", "resp_bg"), json=done)
    for _ in range(2):
        assert client.get("/v1/responses/resp_bg", headers=auth()).status_code == 200

    assert texts(items_of(client, made["id"])) == ["Long task", "Done."]  # once


@pytest.mark.parametrize("status, appended", [
    ("incomplete", ["Go", "Part"]),
    ("cancelled", ["Go", "Part"]),
    ("failed", []),  # the turn did not happen
])
def test_how_a_response_ends_decides_what_its_turn_appends(client, upstream, status,
                                                           appended):
    made = new_conversation(client)
    upstream.post(create_url("openai"), json=upstream_response(
        "resp_end", status=status, output=[said("Part")] if status != "failed" else []))

    create(client, {"model": "openai/m", "input": "Go", "conversation": made["id"]})

    assert texts(items_of(client, made["id"])) == appended


# Streaming and gateway runs, against a provider that streams over real sockets.

def stream_text(resp):
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_data(as_text=True)


@pytest.mark.parametrize("provider", ["anthropic", "groq"])
def test_a_streamed_create_appends_its_turn_when_the_stream_ends(streaming_client, streamer,
                                                                provider):
    client = streaming_client
    made = new_conversation(client, items=[HELLO])
    key = f"conv-stream-{provider}"

    text = stream_text(create(client, {"model": f"{provider}/words-3-0", "input": key,
                                       "stream": True, "conversation": made["id"]}))

    assert "response.completed" in text
    [upstream] = streamer.streams_for(key) or [
        s for s in streamer.streams if isinstance(s.key, list) and key in json.dumps(s.key)]
    assert "Hello" in json.dumps(upstream.body)  # the conversation came first
    assert texts(items_of(client, made["id"])) == ["Hello", key, "w0 w1 w2"]


def wait_for_status(client, response_id, statuses, seconds=10):
    import time
    deadline = time.monotonic() + seconds
    while True:
        body = client.get(f"/v1/responses/{response_id}", headers=auth()).get_json()
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, body["status"]
        time.sleep(0.05)


def test_a_gateway_run_appends_its_turn_and_a_cancelled_one_what_it_had(streaming_client,
                                                                       streamer):
    client = streaming_client
    made = new_conversation(client)
    done = create(client, {"model": "gemini/words-2-0", "input": "conv-run-1",
                           "background": True, "conversation": made["id"]}).get_json()
    wait_for_status(client, done["id"], {"completed"})
    assert texts(items_of(client, made["id"])) == ["conv-run-1", "w0 w1"]

    running = create(client, {"model": "gemini/words-500-20", "input": "conv-run-2",
                              "background": True, "conversation": made["id"]}).get_json()
    streamer.wait_for("conv-run-2", lambda s: s.sent >= 2)
    cancelled = client.post(f"/v1/responses/{running['id']}/cancel", headers=auth()).get_json()

    assert cancelled["status"] == "cancelled"
    had = cancelled["output"][-1]["content"][0]["text"]
    turns = texts(items_of(client, made["id"]))
    assert turns[:3] == ["conv-run-1", "w0 w1", "conv-run-2"]
    assert turns[3:] == [had] and had.startswith("w0 w1")
    # The second run read the first turn before its own input.
    [second] = streamer.streams_for("conv-run-2")
    assert [m["content"] for m in second.body["messages"]] == ["conv-run-1", "w0 w1",
                                                               "conv-run-2"]


def test_two_creates_at_once_append_whole_turns_each_once(streaming_client, streamer):
    client = streaming_client
    made = new_conversation(client, items=[HELLO])
    answers = {}

    def turn(key):
        resp = create(client, {"model": "anthropic/words-4-30", "input": key, "stream": True,
                               "conversation": made["id"]})
        answers[key] = resp.status_code, "response.completed" in resp.get_data(as_text=True)

    threads = [threading.Thread(target=turn, args=(f"conv-both-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == {"conv-both-0": (200, True), "conv-both-1": (200, True)}
    got = texts(items_of(client, made["id"]))
    assert got[0] == "Hello" and len(got) == 5
    # Each turn is whole: its input, then its own output, never interleaved.
    assert sorted([got[1:3], got[3:5]]) == [["conv-both-0", "w0 w1 w2 w3"],
                                            ["conv-both-1", "w0 w1 w2 w3"]]
    # Each read the conversation as it stood when it began, then its own input.
    for i in range(2):
        [seen] = streamer.streams_for(f"conv-both-{i}")
        read = [m["content"] for m in seen.body["messages"]]
        assert read[-1] == f"conv-both-{i}" and read[:-1] == got[:len(read) - 1]
