"""The providers the gateway knows, and what each can do with a response.

PROVIDERS maps each provider name to its Operations: the blocking functions
that create, retrieve, cancel and delete a response there (and list its input items,
count a create's input tokens, compact a conversation), each None where the provider
has no such native operation, and the one that streams a generation
for a background response the gateway runs itself (background.py). A
provider without native cancel has its background responses run by the
gateway, which cancels them by closing that stream. Its order is the order in
which providers are probed when neither the client nor the response store
says which provider holds an id.

Providers with OpenAI's Responses API use openai_compatible.py; those with
only Chat Completions use chat_completions.py, which translates (translate.py).

To add a provider: give it an entry in PROVIDERS, a default base URL below if
it has one fixed host, and, if its key travels in another header than
`Authorization: Bearer`, a line in key_auth(). Configuration then follows from
its name: <NAME>_API_KEY and <NAME>_BASE_URL.
"""

from typing import Callable, NamedTuple

from providers import chat_completions as chat
from providers import openai_compatible as oa
from providers.errors import ProviderError
from providers.upstream import RETRY, RETRY_CREATE, HeaderAuth, Upstream, new_session


class Operations(NamedTuple):
    """What a provider can do; a None retrieve, cancel or delete has no native form."""

    create: Callable  # (upstream, body) -> Response dict
    retrieve: Callable | None  # (upstream, response_id) -> Response dict
    cancel: Callable | None  # (upstream, response_id) -> Response dict
    stream: Callable  # (upstream, body) -> providers.streaming.Generation
    responses_api: bool  # False: Chat Completions only, the create is translated
    delete: Callable | None = None  # (upstream, response_id) -> {"id", "deleted", ...}
    input_items: Callable | None = None  # (upstream, response_id, query) -> a list object
    resume: Callable | None = None  # (upstream, response_id, after) -> an open Generation
    input_tokens: Callable | None = None  # (upstream, body) -> {"object", "input_tokens"}
    compact: Callable | None = None  # (upstream, body) -> a response.compaction object


LIFECYCLE = Operations(oa.create, oa.retrieve, oa.cancel, oa.stream, True, oa.delete,
                       oa.input_items, oa.resume)
# OpenAI's own API (and Azure's, which follows it) also counts input tokens and compacts.
OPENAI = LIFECYCLE._replace(input_tokens=oa.input_tokens, compact=oa.compact)
STORED = Operations(oa.create, oa.retrieve, None, oa.stream, True, oa.delete,
                    oa.input_items)  # keeps responses
STATELESS = Operations(oa.create, None, None, oa.stream, True)  # forgets them at once
CHAT_ONLY = Operations(chat.create, None, None, chat.stream, False)

PROVIDERS = {
    "openai": OPENAI,
    "azure": OPENAI,
    "anthropic": CHAT_ONLY,
    "gemini": CHAT_ONLY,
    "groq": STATELESS,
    "openrouter": STATELESS,
    "deepseek": STATELESS,
    "zai": CHAT_ONLY,
    "xai": STORED,
    "minimax": CHAT_ONLY,
    "xiaomi": CHAT_ONLY,
    "opencodego": CHAT_ONLY,
    "oracle": LIFECYCLE,
    "ollama": STATELESS,
    "bailian": STORED,
    "vllm": LIFECYCLE,
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


def connect(name, base_url, api_key, read_timeout, pool_size, proxies=None, verify=True):
    """Build the Upstream for one configured provider (no network traffic yet).

    `proxies` ({"https": url}) and `verify` (True, or a CA bundle's path) come from
    the environment, read once by config.py.
    """
    auth, network = key_auth(name, api_key), {"proxies": proxies, "verify": verify}
    return Upstream(
        name=name,
        base_url=base_url.rstrip("/"),
        read_timeout=read_timeout,
        session=new_session(auth, pool_size, RETRY, **network),
        create_session=new_session(auth, pool_size, RETRY_CREATE, **network),
        secret=api_key,
    )


def keeps_nothing(name):
    """Whether a provider keeps no responses (no native retrieve), so the store keeps
    what the gateway needs of them, and nobody can ask the provider for one."""
    return PROVIDERS[name].retrieve is None


def withdraw(upstream, response_id):
    """Stop and delete a response at its provider: cancelled first where the provider
    can (one that has ended refuses, which changes nothing), then deleted. For a
    response the gateway made but could not record as its maker's. Raises the
    ProviderError of a delete that failed."""
    operations = PROVIDERS[upstream.name]
    if operations.cancel is not None:
        try:
            operations.cancel(upstream, response_id)
        except ProviderError:
            pass
    if operations.delete is not None:
        operations.delete(upstream, response_id)
