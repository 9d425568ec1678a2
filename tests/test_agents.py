"""Agents that send everything (Codex, the Agents SDK): at a Chat-only provider what has an
equivalent is translated, what asks for nothing the model reads is dropped and named in
X-Gateway-Dropped, hosted tools follow HOSTED_TOOLS; at a native provider the body is
forwarded as sent."""

import copy
import json

import pytest

from support import CHAT_ONLY, assert_envelope, auth, chat_url, create_url, sse_data

SHELL = {"type": "function", "name": "shell", "description": "Runs a command", "strict": False,
         "parameters": {"type": "object", "properties": {"command": {"type": "array"}},
                        "required": ["command"]}}
DOCS = {"type": "namespace", "name": "mcp__docs", "description": "The docs server.",
        "tools": [{"type": "function", "name": "search", "description": "Search the docs.",
                   "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]}


def codex_turn(model, effort="medium"):
    """A turn as Codex 0.169 sends it, with a custom provider and wire_api = "responses"."""
    return {
        "model": model,
        "instructions": "You are a coding agent.",
        "input": [
            {"type": "message", "role": "developer",
             "content": [{"type": "input_text", "text": "<permissions>workspace</permissions>"}]},
            {"type": "message", "role": "user",
             "content": [{"type": "input_text", "text": "Find the setup docs"}]},
            {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAAB-opaque",
             "summary": [{"type": "summary_text", "text": "Look at the files first."}]},
            {"type": "function_call", "name": "shell", "call_id": "call_1",
             "arguments": "{\"command\":[\"ls\"]}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "README.md\n"},
            {"type": "function_call", "namespace": "mcp__docs", "name": "search",
             "call_id": "call_2", "arguments": "{\"q\":\"setup\"}"},
            {"type": "function_call_output", "call_id": "call_2", "output": "docs/setup.md"},
        ],
        "tools": [SHELL, DOCS, {"type": "web_search", "external_web_access": False}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": effort, "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199a2b4-6c1e-7d3a-9f00-5c2b1e0d4a77",
        "client_metadata": {"originator": "codex_cli_rs"},
    }


def chat_stream(*deltas, finish="stop"):
    """A Chat Completions stream: one chunk per delta, a finish, usage, [DONE]."""
    chunks = [{"id": "c1", "object": "chat.completion.chunk", "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
              for delta in deltas]
    chunks += [{"id": "c1", "object": "chat.completion.chunk", "model": "m",
                "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
               {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [],
                "usage": {"prompt_tokens": 90, "completion_tokens": 7, "total_tokens": 97}}]
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def sent(upstream):
    return json.loads(upstream.calls[-1].request.body)


DROPPED_EVERYWHERE = ["include", "prompt_cache_key", "client_metadata", "reasoning.summary",
                      "input reasoning items", "tools (web_search)"]
SETTING = {"gemini": {"reasoning_effort": "medium"}, "zai": {"thinking": {"type": "enabled"}}}


@pytest.mark.parametrize("provider", CHAT_ONLY)
def test_a_codex_turn_streams_at_every_chat_only_provider(client, upstream, provider):
    upstream.post(chat_url(provider), content_type="text/event-stream", body=chat_stream(
        {"role": "assistant", "content": "See "}, {"content": "docs/setup.md."}))

    resp = client.post("/v1/responses", headers=auth(), json=codex_turn(f"{provider}/m"))

    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    events = sse_data(resp.get_data(as_text=True))
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "See docs/setup.md."
    dropped = resp.headers["X-Gateway-Dropped"].split(", ")
    assert sorted(dropped) == sorted(DROPPED_EVERYWHERE + (
        [] if provider in SETTING else ["reasoning.effort"]))
    body = sent(upstream)
    assert {k: v for k, v in body.items() if k in ("reasoning_effort", "thinking")} == \
        SETTING.get(provider, {})
    for field in ("include", "prompt_cache_key", "client_metadata", "reasoning", "store"):
        assert field not in body
    assert [tool["function"]["name"] for tool in body["tools"]] == ["shell", "mcp__docs__search"]
    assert body["tools"][1]["function"]["description"] == "The docs server. Search the docs."
    assert (body["parallel_tool_calls"], body["tool_choice"]) == (False, "auto")
    assert [m["role"] for m in body["messages"]] == [
        "system", "system", "user", "assistant", "tool", "assistant", "tool"]
    assert body["messages"][5]["tool_calls"][0]["function"]["name"] == "mcp__docs__search"
    assert "gAAAAB" not in json.dumps(body)  # the opaque reasoning never travels


@pytest.mark.parametrize("provider", CHAT_ONLY)
def test_a_call_to_a_namespaced_function_comes_back_under_its_namespace(client, upstream,
                                                                       provider):
    call = {"index": 0, "id": "call_9", "type": "function",
            "function": {"name": "mcp__docs__search", "arguments": ""}}
    upstream.post(chat_url(provider), content_type="text/event-stream", body=chat_stream(
        {"role": "assistant", "tool_calls": [call]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{\"q\":"}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "\"install\"}"}}]},
        finish="tool_calls"))

    resp = client.post("/v1/responses", headers=auth(), json=codex_turn(f"{provider}/m"))

    events = sse_data(resp.get_data(as_text=True))
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    final = events[-1]["response"]["output"]
    for item in (added[0], final[0]):
        assert (item["type"], item["namespace"], item["name"], item["call_id"]) == (
            "function_call", "mcp__docs", "search", "call_9")
    assert final[0]["arguments"] == "{\"q\":\"install\"}"


def test_a_whole_answer_maps_a_namespaced_call_back_too(client, upstream):
    upstream.post(chat_url("anthropic"), json={
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [
                {"id": "call_3", "type": "function",
                 "function": {"name": "mcp__docs__search", "arguments": "{}"}},
                {"id": "call_4", "type": "function",
                 "function": {"name": "shell", "arguments": "{}"}}]}}]})

    body = {**codex_turn("anthropic/m"), "stream": False, "store": True}
    output = client.post("/v1/responses", headers=auth(), json=body).get_json()["output"]

    assert [(i.get("namespace"), i["name"]) for i in output] == [
        ("mcp__docs", "search"), (None, "shell")]


@pytest.mark.parametrize("effort, zai", [("none", "disabled"), ("minimal", "disabled"),
                                         ("low", "enabled"), ("high", "enabled")])
def test_a_reasoning_effort_becomes_the_providers_own_setting(client, upstream, effort, zai):
    for provider in ("gemini", "zai"):
        upstream.post(chat_url(provider), content_type="text/event-stream",
                      body=chat_stream({"content": "ok"}))
        client.post("/v1/responses", headers=auth(),
                    json=codex_turn(f"{provider}/m", effort)).get_data()

    gemini, zai_sent = (json.loads(c.request.body) for c in upstream.calls)
    assert gemini["reasoning_effort"] == effort
    assert zai_sent["thinking"] == {"type": zai}


def test_an_operator_may_refuse_hosted_tools_instead(make_client, upstream):
    client = make_client(HOSTED_TOOLS="refuse")

    resp = client.post("/v1/responses", headers=auth(), json=codex_turn("anthropic/m"))

    error = assert_envelope(resp, 400, "invalid_request_error", param="tools[2].type")
    assert "web_search" in error["message"] and "anthropic" in error["message"]
    assert len(upstream.calls) == 0


def test_a_request_that_drops_nothing_says_nothing(client, upstream):
    upstream.post(chat_url("anthropic"), content_type="text/event-stream",
                  body=chat_stream({"content": "ok"}))

    resp = client.post("/v1/responses", headers=auth(), json={
        "model": "anthropic/m", "input": "hi", "stream": True, "tools": [SHELL]})

    assert resp.status_code == 200 and "X-Gateway-Dropped" not in resp.headers


def test_two_tools_under_one_name_are_a_400(client, upstream):
    clash = {**SHELL, "name": "mcp__docs__search"}
    body = {**codex_turn("anthropic/m"), "tools": [clash, DOCS]}

    assert_envelope(client.post("/v1/responses", headers=auth(), json=body), 400,
                    "invalid_request_error", param="tools")


@pytest.mark.parametrize("provider", ["openai", "groq"])
def test_a_provider_with_a_responses_api_gets_the_turn_as_sent(client, upstream, provider):
    turn = codex_turn(f"{provider}/gpt-5")
    upstream.post(create_url(provider), content_type="text/event-stream", body="".join(
        f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in [
            {"type": "response.created", "sequence_number": 0, "response": {
                "id": "resp_n1", "object": "response", "status": "in_progress", "output": [],
                "created_at": 1, "model": "gpt-5"}},
            {"type": "response.completed", "sequence_number": 1, "response": {
                "id": "resp_n1", "object": "response", "status": "completed", "output": [],
                "created_at": 1, "model": "gpt-5"}}]))

    resp = client.post("/v1/responses", headers=auth(), json=copy.deepcopy(turn))

    assert resp.status_code == 200
    assert sse_data(resp.get_data(as_text=True))[-1]["type"] == "response.completed"
    assert sent(upstream) == {**turn, "model": "gpt-5"}
    assert "X-Gateway-Dropped" not in resp.headers
