"""The providers the gateway knows, and how each cancels a response.

PROVIDERS maps each provider name to the blocking function that cancels a
response there, or to None where the provider has no native cancel (the
gateway answers 501 for those). Its order is the order in which providers are
probed when the client names none.

To add a provider: give it an entry in PROVIDERS (its cancel function, or
None), a default base URL below if it has one fixed host, and, if its key
travels in another header than `Authorization: Bearer`, a line in
key_auth(). Configuration then follows from its name: <NAME>_API_KEY and
<NAME>_BASE_URL.
"""

from providers import openai_compatible
from providers.upstream import HeaderAuth, Upstream, new_session

PROVIDERS = {
    "openai": openai_compatible.cancel,
    "azure": openai_compatible.cancel,
    "anthropic": None,
    "gemini": None,
    "groq": None,
    "openrouter": None,
    "deepseek": None,
    "zai": None,
    "xai": None,
    "minimax": None,
    "xiaomi": None,
    "opencodego": None,
    "oracle": openai_compatible.cancel,
    "ollama": None,
    "bailian": None,
    "vllm": openai_compatible.cancel,
}

# Azure and Oracle have none: their URL names the customer's resource or region.
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta/openai",
    "groq": "https://api.groq.com/openai/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "deepseek": "https://api.deepseek.com",
    "zai": "https://api.z.ai/api/paas/v4",
    "xai": "https://api.x.ai/v1",
    "minimax": "https://api.minimax.io/v1",
    "xiaomi": "https://api.xiaomimimo.com/v1",
    "opencodego": "https://opencode.ai/zen/go/v1",
    "bailian": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
    "ollama": "http://localhost:11434/v1",
    "vllm": "http://localhost:8000/v1",
}

# Self-hosted servers: configured by their base URL, a key is optional.
KEY_OPTIONAL = frozenset({"ollama", "vllm"})


def key_auth(name, api_key):
    """How the gateway's own key travels to this provider (None: no key)."""
    if not api_key:
        return None
    if name == "azure":
        return HeaderAuth("api-key", api_key)
    return HeaderAuth("Authorization", f"Bearer {api_key}")


def connect(name, base_url, api_key, read_timeout, pool_size):
    """Build the Upstream for one configured provider (no network traffic yet)."""
    return Upstream(
        name=name,
        base_url=base_url.rstrip("/"),
        read_timeout=read_timeout,
        session=new_session(key_auth(name, api_key), pool_size),
        secret=api_key,
    )
