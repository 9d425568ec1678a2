"""previous_response_id at every provider: forwarded where the provider chains natively,
otherwise the conversation is rebuilt from the store and sent whole."""

import json
import time

import pytest

from support import (
    OTHER_GATEWAY_KEY, assert_envelope, auth, chat_url, create_url, upstream_response,
)


def chat_answer(content=None, tool_call=None):
    message = {"role": "assistant", "content": content}
    if tool_call:
        message["tool_calls"] = [{"id": tool_call, "type": "function",
                                  "function": {"name": "weather", "arguments": "{\"c\":1}"}}]
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if tool_call else "stop"}]}


def create(client, body, key=None):
    return client.post("/v1/responses", headers=auth(*([key] if key else [])), json=body)


def sent(upstream, index=-1):
    return json.loads(upstream.calls[index].request.body)


def test_a_chat_only_chain_of_three_turns_sends_the_whole_conversation(client, upstream):
    upstream.post(chat_url("anthropic"), json=chat_answer("Hi there."))
    first = create(client, {"model": "anthropic/m", "input": "Hello",
                            "instructions": "Be brief."}).get_json()
    upstream.post(chat_url("anthropic"), json=chat_answer(tool_call="call_7"))
    second = create(client, {"model": "anthropic/m", "input": "Weather?",
                             "previous_response_id": first["id"]}).get_json()
    upstream.post(chat_url("anthropic"), json=chat_answer("Sunny."))
    third = create(client, {"model": "anthropic/m", "previous_response_id": second["id"],
                            "input": [{"type": "function_call_output", "call_id": "call_7",
                                       "output": "sunny"}]})

    assert third.status_code == 200, third.get_json()
    assert sent(upstream, 1)["messages"] == [
        {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "Weather?"}]
    assert sent(upstream, 2)["messages"] == [
        {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_7", "type": "function",
            "function": {"name": "weather", "arguments": "{\"c\":1}"}}]},
        {"role": "tool", "tool_call_id": "call_7", "content": "sunny"}]
    # Each response lists only its own turn's input.
    items = client.get(f"/v1/responses/{second['id']}/input_items", headers=auth()).get_json()
    assert [i["content"][0]["text"] for i in items["data"]] == ["Weather?"]


def test_a_stateless_responses_provider_gets_the_rebuilt_input(client, upstream):
    upstream.post(create_url("groq"), json=upstream_response("resp_g1", status="completed",
        output=[{"type": "message", "id": "msg_o", "role": "assistant", "status": "completed",
                 "content": [{"type": "output_text", "text": "Four.", "annotations": []}]}]))
    create(client, {"model": "groq/m", "input": "2+2?"})
    upstream.post(create_url("groq"), json=upstream_response("resp_g2", status="completed"))

    assert create(client, {"model": "groq/m", "input": "And 3+3?",
                           "previous_response_id": "resp_g1"}).status_code == 200

    body = sent(upstream)
    assert "previous_response_id" not in body
    assert body["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "2+2?"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Four.", "annotations": []}]},
        {"role": "user", "content": "And 3+3?"}]


def test_a_provider_that_chains_natively_gets_previous_response_id_as_is(client, upstream):
    upstream.post(create_url("openai"), json=upstream_response("resp_o2", status="completed"))

    assert create(client, {"model": "openai/m", "input": "next",
                           "previous_response_id": "resp_made_at_openai"}).status_code == 200

    assert sent(upstream)["previous_response_id"] == "resp_made_at_openai"
    assert sent(upstream)["input"] == "next"


def test_a_chain_through_a_gateway_run_rebuilds_from_its_stored_output(streaming_client,
                                                                       streamer):
    run = create(streaming_client, {"model": "anthropic/words-3-0", "input": "chain-1",
                                    "background": True}).get_json()
    deadline = time.monotonic() + 5
    while streaming_client.get(f"/v1/responses/{run['id']}",
                               headers=auth()).get_json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.02)

    follow = create(streaming_client, {"model": "anthropic/words-2-0", "input": "chain-2",
                                       "previous_response_id": run["id"], "background": True})

    assert follow.status_code == 200
    stream = streamer.wait_for("chain-2", lambda s: s.finished)
    assert stream.body["messages"] == [{"role": "user", "content": "chain-1"},
                                       {"role": "assistant", "content": "w0 w1 w2"},
                                       {"role": "user", "content": "chain-2"}]


def made(client, upstream, **fields):
    upstream.post(chat_url("anthropic"), json=chat_answer("ok"))
    return create(client, {"model": "anthropic/m", "input": "x", **fields}).get_json()["id"]


@pytest.mark.parametrize("case", ["unknown", "store-false", "another-key", "deleted"])
def test_a_previous_response_that_cannot_be_followed_is_400_as_at_openai(client, upstream,
                                                                         case):
    previous = {
        "unknown": lambda: "resp_nowhere",
        "store-false": lambda: made(client, upstream, store=False),
        "another-key": lambda: made(client, upstream),
        "deleted": lambda: made(client, upstream),
    }[case]()
    if case == "deleted":
        assert client.delete(f"/v1/responses/{previous}", headers=auth()).status_code == 200
    calls = len(upstream.calls)

    resp = create(client, {"model": "anthropic/m", "input": "y", "previous_response_id": previous},
                  key=OTHER_GATEWAY_KEY if case == "another-key" else None)

    error = assert_envelope(resp, 400, "invalid_request_error", param="previous_response_id",
                            code="previous_response_not_found")
    assert error["message"] == f"Previous response with id '{previous}' not found."
    assert len(upstream.calls) == calls  # nothing was sent


def test_a_previous_response_at_another_provider_is_a_clear_400(client, upstream):
    upstream.post(create_url("groq"), json=upstream_response("resp_at_groq", status="completed"))
    create(client, {"model": "groq/m", "input": "x"})

    resp = create(client, {"model": "anthropic/m", "input": "y",
                           "previous_response_id": "resp_at_groq"})

    error = assert_envelope(resp, 400, "invalid_request_error", param="previous_response_id")
    assert "groq" in error["message"] and "anthropic" in error["message"]
