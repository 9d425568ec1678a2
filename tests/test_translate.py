"""Responses API create <-> Chat Completions, both ways, without Flask or HTTP."""

import re

import pytest

from providers.errors import BadGateway, Untranslatable
from providers.translate import chat_request, chat_response, new_response_id, response_usage

IMAGE = "https://example.com/cat.png"


def test_a_string_input_with_instructions_and_carried_fields():
    body = {"model": "claude-x", "input": "Hi", "instructions": "Be brief.",
            "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9, "user": "u-1",
            "parallel_tool_calls": False, "background": False, "stream": False,
            "metadata": {"k": "v"}, "store": True, "truncation": "disabled"}

    assert chat_request(body, "anthropic") == {
        "model": "claude-x",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Hi"}],
        "max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "user": "u-1",
        "parallel_tool_calls": False,
    }


def test_message_items_with_parts_images_and_a_tool_round_trip():
    body = {"model": "m", "input": [
        {"role": "developer", "content": "Rules."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": IMAGE, "detail": "low"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": '{"q":1}'},
        {"type": "function_call", "call_id": "call_2", "name": "lookup", "arguments": '{"q":2}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "one"},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "two"}]},
    ]}

    assert chat_request(body, "gemini")["messages"] == [
        {"role": "system", "content": "Rules."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}}]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": '{"q":1}'}},
            {"id": "call_2", "type": "function",
             "function": {"name": "lookup", "arguments": '{"q":2}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "tool", "tool_call_id": "call_2", "content": "two"},
    ]


def test_a_function_call_with_no_assistant_message_before_it_makes_one():
    body = {"model": "m", "input": [
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]}

    assert chat_request(body, "zai")["messages"][1] == {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "c", "type": "function",
                        "function": {"name": "f", "arguments": "{}"}}]}


def test_function_tools_tool_choice_and_json_schema_take_the_chat_shape():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = {"model": "m", "input": "x",
            "tools": [{"type": "function", "name": "f", "description": "does f",
                       "parameters": schema, "strict": True}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "out", "schema": schema,
                                "strict": True}}}

    chat = chat_request(body, "minimax")

    assert chat["tools"] == [{"type": "function", "function": {
        "name": "f", "description": "does f", "parameters": schema, "strict": True}}]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "out", "schema": schema, "strict": True}}


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_words_carry_over(choice):
    assert chat_request({"model": "m", "input": "x", "tool_choice": choice},
                        "xiaomi")["tool_choice"] == choice


@pytest.mark.parametrize("fmt,expected", [
    ({"type": "text"}, None), ({"type": "json_object"}, {"type": "json_object"})])
def test_plain_and_json_object_formats(fmt, expected):
    chat = chat_request({"model": "m", "input": "x", "text": {"format": fmt}}, "opencodego")

    assert chat.get("response_format") == expected


# Every field that would change what the model does and has no faithful Chat form.
REFUSED = [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "name": "f"}, {"type": "file_search"}]}, "tools[1].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].name"),
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"reasoning": {"effort": "high"}}, "reasoning"),
    ({"include": ["reasoning.encrypted_content"]}, "include"),
    ({"truncation": "auto"}, "truncation"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"tool_choice": {"type": "web_search"}}, "tool_choice"),
    ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
    ({"instructions": ["not", "text"]}, "instructions"),
    ({"input": 42}, "input"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].image_url"),
    ({"input": [{"role": "assistant", "content": [
        {"type": "input_image", "image_url": IMAGE}]}]}, "input[0].content"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"input": [{"type": "function_call_output", "call_id": "c",
                 "output": [{"type": "input_image", "image_url": IMAGE}]}]}, "input[0].output[0]"),
]


@pytest.mark.parametrize("fields,param", REFUSED, ids=[p for _, p in REFUSED])
def test_what_cannot_be_carried_is_refused_by_name(fields, param):
    body = {"model": "m", "input": "x", **fields}

    with pytest.raises(Untranslatable) as info:
        chat_request(body, "anthropic")

    assert info.value.param == param
    assert info.value.message


def test_the_refusal_of_previous_response_id_says_what_to_do_instead():
    with pytest.raises(Untranslatable) as info:
        chat_request({"model": "m", "input": "x", "previous_response_id": "r"}, "anthropic")

    assert "whole conversation" in info.value.message


# The way back.

def completion(message, finish_reason="stop", usage=None):
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1741476542,
            "model": "claude-x-2025", "choices": [
                {"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": usage}


def test_an_answer_with_text_and_usage():
    usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18,
             "prompt_tokens_details": {"cached_tokens": 3}}

    got = chat_response(completion({"role": "assistant", "content": "Hello."}, usage=usage),
                        "anthropic", "resp_" + "a" * 32)

    assert got == {
        "id": "resp_" + "a" * 32, "object": "response", "created_at": 1741476542,
        "model": "claude-x-2025", "status": "completed", "error": None,
        "output": [{"type": "message", "id": "msg_" + "a" * 32, "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Hello.", "annotations": []}]}],
        "usage": {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18,
                  "prompt_tokens_details": {"cached_tokens": 3}},
    }


def test_an_answer_with_tool_calls_and_no_text():
    message = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_9", "type": "function",
         "function": {"name": "lookup", "arguments": '{"q": "x"}'}}]}

    got = chat_response(completion(message, "tool_calls"), "gemini", "resp_1")

    assert got["status"] == "completed"
    assert got["output"] == [{"type": "function_call", "id": "fc_call_9", "call_id": "call_9",
                              "name": "lookup", "arguments": '{"q": "x"}',
                              "status": "completed"}]


@pytest.mark.parametrize("reason,status", [("stop", "completed"), ("tool_calls", "completed"),
                                           ("length", "incomplete"),
                                           ("content_filter", "incomplete")])
def test_the_finish_reason_decides_the_status(reason, status):
    got = chat_response(completion({"content": "x"}, reason), "zai", "resp_1")

    assert got["status"] == status


def test_text_parts_in_an_answer_are_joined():
    message = {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}

    assert chat_response(completion(message), "zai", "resp_1")["output"][0]["content"][0][
        "text"] == "ab"


@pytest.mark.parametrize("answer", [{}, {"choices": []}, {"choices": [{"message": "x"}]},
                                    completion({"tool_calls": [{"id": "c", "function": 1}]})])
def test_an_answer_without_a_usable_message_is_bad_gateway(answer):
    with pytest.raises(BadGateway):
        chat_response(answer, "anthropic", "resp_1")


def test_usage_names_and_minted_ids():
    assert response_usage({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}) == {
        "input_tokens": 1, "output_tokens": 2, "total_tokens": 3}
    assert response_usage(None) is None
    ids = {new_response_id() for _ in range(100)}
    assert len(ids) == 100 and all(re.fullmatch(r"resp_[0-9a-f]{32}", i) for i in ids)
