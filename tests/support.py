"""Test data and helpers shared by the test modules."""

import json

from providers import DEFAULT_BASE_URLS

GATEWAY_KEY = "gw-test-key-0001"
OTHER_GATEWAY_KEY = "gw-test-key-0002"

# Every provider configured, each with a key that must never leave for the wrong place.
PROVIDER_KEYS = {
    "openai": "sk-openai-secret-0001",
    "azure": "azure-secret-0001",
    "anthropic": "sk-ant-secret-0001",
    "gemini": "gemini-secret-0001",
    "groq": "gsk-secret-0001",
    "openrouter": "sk-or-secret-0001",
    "deepseek": "sk-deepseek-secret-0001",
    "zai": "zai-secret-0001",
    "xai": "xai-secret-0001",
    "minimax": "minimax-secret-0001",
    "xiaomi": "mimo-secret-0001",
    "opencodego": "opencode-secret-0001",
    "oracle": "oci-secret-0001",
    "ollama": "ollama-secret-0001",
    "bailian": "sk-bailian-secret-0001",
    "vllm": "vllm-secret-0001",
}
BASE_URLS = {
    "openai": "https://api.openai.com/v1",  # the built-in default
    "azure": "https://contoso.openai.azure.com/openai/v1",
    "oracle": "https://inference.generativeai.us-chicago-1.oci.oraclecloud.com/openai/v1",
    "vllm": "http://vllm.internal:8000/v1",
}
NATIVE = ["openai", "azure", "oracle", "vllm"]  # native cancel, in the fixed probing order
RETRIEVE = ["openai", "azure", "xai", "oracle", "bailian", "vllm"]  # native retrieve, in order
RESPONSES_API = ["openai", "azure", "groq", "openrouter", "deepseek", "xai", "oracle",
                 "ollama", "bailian", "vllm"]  # a create is forwarded to these

ENV = {
    "GATEWAY_API_KEYS": f"{GATEWAY_KEY}, {OTHER_GATEWAY_KEY}",
    **{f"{name.upper()}_API_KEY": key for name, key in PROVIDER_KEYS.items()},
    **{f"{name.upper()}_BASE_URL": url for name, url in BASE_URLS.items() if name != "openai"},
}


def base_url(provider):
    """The provider's base URL in ENV: set there, or the built-in default."""
    return BASE_URLS.get(provider) or DEFAULT_BASE_URLS[provider]


def cancel_url(provider, response_id):
    """The upstream URL a native provider's cancel must hit, id already escaped."""
    return f"{base_url(provider)}/responses/{response_id}/cancel"


def retrieve_url(provider, response_id):
    """The upstream URL a native retrieve must hit, id already escaped."""
    return f"{base_url(provider)}/responses/{response_id}"


def create_url(provider):
    """The upstream URL a create must hit."""
    return f"{base_url(provider)}/responses"


def upstream_response(response_id="resp_123", **fields):
    """A Response object as OpenAI's API returns it for a cancelled background job."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": 1741476542,
        "status": "cancelled",
        "background": True,
        "error": None,
        "model": "gpt-4o-mini-2024-07-18",
        "output": [],
        "parallel_tool_calls": True,
        "usage": None,
        **fields,
    }


def auth(key=GATEWAY_KEY):
    """The header a client sends its gateway key in."""
    return {"Authorization": f"Bearer {key}"}


def assert_envelope(resp, status, type_, param=None, code=None):
    """The response is the OpenAI error envelope with these values; return its error."""
    assert resp.status_code == status
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"type", "message", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (type_, param, code)
    assert isinstance(error["message"], str) and error["message"]
    return error

CHAT_ONLY = ["anthropic", "gemini", "zai", "minimax", "xiaomi", "opencodego"]  # translated


def chat_url(provider):
    """The upstream URL a translated create must hit."""
    return f"{base_url(provider)}/chat/completions"


def sse_data(text):
    """The events (each `data:` as JSON) of a server-sent-event stream, comments skipped."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if not line.startswith(":"))
        if lines:
            events.append(json.loads(lines["data"]))
    return events
