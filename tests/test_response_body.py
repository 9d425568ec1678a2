"""The 200 body: the contract's Response fields only, stamped with id, object and provider."""

from support import cancel_url, upstream_response

FULL_UPSTREAM = upstream_response(
    "resp_up",
    object="something-else",
    provider="not-us",
    status="cancelled",
    instructions="You are terse.",  # not in the contract: dropped
    metadata={"team": "search"},
    output=[{
        "type": "message",
        "id": "msg_1",
        "status": "completed",
        "role": "assistant",
        "extra": "dropped",
        "content": [{
            "type": "output_text",
            "text": "Hello",
            "annotations": [{"type": "url_citation", "url": "https://example.com"}],
            "logprobs": [],
        }],
    }, {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "lookup",
        "arguments": "{\"q\": 1}",
        "status": None,
    }],
    usage={
        "input_tokens": 36,
        "input_tokens_details": {"cached_tokens": 12},
        "output_tokens": 87,
        "output_tokens_details": {"reasoning_tokens": 64},
        "total_tokens": 123,
        "cost": 0.0042,
        "server_tool_use": {"web_search_requests": 1},
    },
    error={"code": "server_error", "message": "stopped", "debug": "dropped"},
)


def test_upstream_response_is_reshaped_to_the_contract(cancel, upstream):
    upstream.post(cancel_url("openai", "resp_123"), json=FULL_UPSTREAM)

    resp = cancel("resp_123", provider="openai")

    assert resp.status_code == 200
    assert resp.get_json() == {
        "id": "resp_123",
        "object": "response",
        "provider": "openai",
        "created_at": 1741476542,
        "model": "gpt-4o-mini-2024-07-18",
        "status": "cancelled",
        "error": {"code": "server_error", "message": "stopped"},
        "output": [{
            "type": "message",
            "id": "msg_1",
            "status": "completed",
            "role": "assistant",
            "content": [{
                "type": "output_text",
                "text": "Hello",
                "annotations": [{"type": "url_citation", "url": "https://example.com"}],
            }],
        }, {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_1",
            "name": "lookup",
            "arguments": "{\"q\": 1}",
        }],
        "usage": {
            "input_tokens": 36,
            "prompt_tokens_details": {"cached_tokens": 12},
            "output_tokens": 87,
            "completion_tokens_details": {"reasoning_tokens": 64},
            "total_tokens": 123,
            "raw_usage": {"cost": 0.0042, "server_tool_use": {"web_search_requests": 1}},
        },
    }


def test_null_error_and_usage_are_left_out(cancel, upstream):
    upstream.post(cancel_url("openai", "resp_123"), json=upstream_response(error=None, usage=None))

    body = cancel("resp_123", provider="openai").get_json()

    assert "error" not in body and "usage" not in body
    assert body["status"] == "cancelled" and body["output"] == []


def test_a_minimal_upstream_body_still_gets_id_object_and_provider(cancel, upstream):
    upstream.post(cancel_url("vllm", "resp_123"), json={})

    body = cancel("resp_123", provider="vllm").get_json()

    assert body == {"id": "resp_123", "object": "response", "provider": "vllm"}


def test_contract_named_usage_fields_pass_as_they_are(cancel, upstream):
    usage = {"prompt_tokens_details": {"cached_tokens": 3}, "raw_usage": {"kept": 1}, "extra": 2}
    upstream.post(cancel_url("openai", "resp_123"), json=upstream_response(usage=usage))

    body = cancel("resp_123", provider="openai").get_json()

    assert body["usage"] == {
        "prompt_tokens_details": {"cached_tokens": 3}, "raw_usage": {"kept": 1, "extra": 2},
    }
