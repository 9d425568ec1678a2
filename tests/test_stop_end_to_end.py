"""The stop reaches the provider whatever its stream looks like: through real gunicorn (two
instances sharing Redis, as the Procfile starts them), every framing a provider may give a
stream (chunked, by length, ended by closing the connection) over every transport (HTTP,
TLS with a CA of our own, a forward proxy, a CONNECT tunnel), and every way a stream is
stopped: a cancel here, a cancel on the other instance, a streaming client that leaves."""

import time

import openai
import pytest
import requests

from gateway_process import run_gateway
from transports import ROUTES

GATEWAY_KEY = "gw-stop-key-0001"
# Providers without native cancel, so the gateway runs their background responses: one
# route each. Chat-only and Responses API providers alike.
PROVIDERS = ["anthropic", "groq", "gemini", "openrouter", "zai", "deepseek", "minimax",
             "ollama", "xiaomi", "xai", "opencodego", "bailian"]
ROUTE_OF = dict(zip(PROVIDERS, ROUTES, strict=True))
MODEL = "words-400-50"  # 20 s of deltas, 50 ms apart: long past any stop


@pytest.fixture(scope="module")
def pair(routes, redis_url, tmp_path_factory):
    """Two gateways on one Redis, each provider behind its own route."""
    env = {"GATEWAY_API_KEYS": GATEWAY_KEY, "STORE_URL": redis_url, **routes.env()}
    for provider, route in ROUTE_OF.items():
        env[f"{provider.upper()}_API_KEY"] = f"key-{provider}"
        env[f"{provider.upper()}_BASE_URL"] = routes.base_url(route)
    with run_gateway(tmp_path_factory.mktemp("stop-a"), **env) as first, \
            run_gateway(tmp_path_factory.mktemp("stop-b"), **env) as second:
        yield first, second


def sdk(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)


def started(routes, provider, key):
    """The fake's record of the stream for `key`, once a few deltas went out."""
    return routes.fake(ROUTE_OF[provider]).wait_for(key, lambda s: s.sent >= 5)


def assert_stopped_within_a_second(routes, provider, key, stopped_at):
    stream = routes.fake(ROUTE_OF[provider]).wait_for(key, lambda s: s.client_left, seconds=3)
    assert stream.gone_at - stopped_at < 1 and not stream.finished


@pytest.mark.parametrize("provider", PROVIDERS, ids=[ROUTE_OF[p] for p in PROVIDERS])
@pytest.mark.parametrize("where", ["here", "elsewhere"])
def test_a_cancel_stops_a_gateway_run_at_the_provider(pair, routes, provider, where):
    key = f"stop-{where}-{provider}"
    created = sdk(pair[0]).responses.create(model=f"{provider}/{MODEL}", input=key,
                                            background=True)
    started(routes, provider, key)

    stopped_at = time.monotonic()
    cancelled = sdk(pair[0] if where == "here" else pair[1]).responses.cancel(created.id)

    assert cancelled.status == "cancelled"
    assert_stopped_within_a_second(routes, provider, key, stopped_at)


@pytest.mark.parametrize("provider", PROVIDERS, ids=[ROUTE_OF[p] for p in PROVIDERS])
def test_a_streaming_client_that_leaves_stops_the_provider(pair, routes, provider):
    key = f"stop-leave-{provider}"
    with requests.post(f"{pair[0].url}/v1/responses", stream=True, timeout=10,
                       headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                       json={"model": f"{provider}/{MODEL}", "input": key,
                             "stream": True}) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        while b"output_text.delta" not in next(lines):
            pass
        started(routes, provider, key)
    stopped_at = time.monotonic()  # the connection is closed on leaving the block

    assert_stopped_within_a_second(routes, provider, key, stopped_at)
