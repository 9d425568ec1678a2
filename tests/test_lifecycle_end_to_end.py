"""The SDK's whole lifecycle through real gunicorn (2 workers each) and fake providers on
127.0.0.1: create in the background, retrieve, cancel, cancel again; first on the
default SQLite store, then across two gateways that share one Redis."""

import openai
import pytest

from fake_upstream import FakeProvider
from gateway_process import run_gateway

GATEWAY_KEY = "gw-lifecycle-key-0001"
OTHER_KEY = "gw-lifecycle-key-0002"


def sdk(gateway, key=GATEWAY_KEY):
    """A fresh SDK client: a new connection, so either worker may answer."""
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def vllm():
    """A second fake provider, playing a self-hosted vLLM."""
    with FakeProvider(prefix="resp_vllm") as fake:
        yield fake


def gateway_env(openai_fake, vllm_fake, **extra):
    return dict(GATEWAY_API_KEYS=f"{GATEWAY_KEY},{OTHER_KEY}", OPENAI_API_KEY="sk-lifecycle-0001",
                OPENAI_BASE_URL=openai_fake.base_url, VLLM_BASE_URL=vllm_fake.base_url,
                WEB_CONCURRENCY="2", **extra)


@pytest.fixture(scope="module")
def sqlite_gateway(provider, vllm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sqlite-gateway")
    with run_gateway(folder, **gateway_env(provider, vllm,
                                           STORE_URL=f"sqlite:///{folder}/store.sqlite3")) as gw:
        gw.store_file = folder / "store.sqlite3"
        yield gw


def test_create_retrieve_cancel_and_cancel_again_with_sqlite(sqlite_gateway, provider):
    for i in range(5):  # each call on a new connection: the workers share the file
        prompt = f"Write haiku number {i}."
        created = sdk(sqlite_gateway).responses.create(
            model="openai/gpt-4o-mini", input=prompt, background=True)
        polled = sdk(sqlite_gateway).responses.retrieve(created.id)
        cancelled = sdk(sqlite_gateway).responses.cancel(created.id)
        again = sdk(sqlite_gateway).responses.cancel(created.id)

        assert created.id.startswith("resp_fake_") and created.status == "queued"
        assert (polled.id, polled.status) == (created.id, "queued")
        assert (cancelled.status, again.status) == ("cancelled", "cancelled")
        assert again.model_dump() == cancelled.model_dump()
        assert provider.calls_for(created.id, "GET") == 1
        assert provider.calls_for(created.id, "POST") == 1  # the repeat cancel was answered here
        [sent] = [r.body for r in provider.received
                  if r.path == "/v1/responses" and r.body["input"] == prompt]
        assert sent == {"model": "gpt-4o-mini", "input": prompt, "background": True}
    assert sqlite_gateway.store_file.exists()


def test_two_gateways_sharing_redis(provider, vllm, redis_url, tmp_path_factory):
    env = gateway_env(provider, vllm, STORE_URL=redis_url)
    with run_gateway(tmp_path_factory.mktemp("a"), **env) as first, \
            run_gateway(tmp_path_factory.mktemp("b"), **env) as second:
        created = sdk(first).responses.create(model="vllm/qwen3", input="x", background=True)

        polled = sdk(second).responses.retrieve(created.id)
        cancelled = sdk(second).responses.cancel(created.id)
        again = sdk(first).responses.cancel(created.id)

    assert created.id.startswith("resp_vllm_")
    assert (polled.status, cancelled.status, again.status) == ("queued", "cancelled", "cancelled")
    # The second gateway went straight to vLLM: openai (first in probing order) never heard of it.
    assert provider.calls_for(created.id) == 0
    assert vllm.calls_for(created.id, "GET") == 1 and vllm.calls_for(created.id, "POST") == 1


def test_another_key_neither_retrieves_nor_cancels_a_response(sqlite_gateway, provider):
    created = sdk(sqlite_gateway).responses.create(model="openai/gpt-4o-mini", input="mine",
                                                   background=True)

    with pytest.raises(openai.NotFoundError):
        sdk(sqlite_gateway, OTHER_KEY).responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk(sqlite_gateway, OTHER_KEY).responses.cancel(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk(sqlite_gateway, OTHER_KEY).responses.cancel(created.id,
                                                        extra_query={"provider": "openai"})

    assert provider.calls_for(created.id) == 0  # none of it reached the provider
    assert sdk(sqlite_gateway).responses.cancel(created.id).status == "cancelled"


def test_the_sdk_deletes_a_response_at_its_provider(sqlite_gateway, provider):
    created = sdk(sqlite_gateway).responses.create(model="openai/gpt-4o-mini", input="del",
                                                   background=True)

    assert sdk(sqlite_gateway).responses.delete(created.id) is None

    assert provider.calls_for(created.id, "DELETE") == 1
    for call in (sdk(sqlite_gateway).responses.retrieve, sdk(sqlite_gateway).responses.cancel,
                 sdk(sqlite_gateway).responses.delete):
        with pytest.raises(openai.NotFoundError):
            call(created.id)
    assert provider.calls_for(created.id) == 1  # none of those asked the provider again
