"""Conversations, token counts and compaction through gunicorn as the Procfile starts it, with
the official SDK and the Agents SDK unchanged, against a provider on 127.0.0.1 whose model
echoes what it heard (fake_echo.py), so each provider call shows which turns it carried."""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from fake_echo import EchoProvider, texts
from gateway_process import run_gateway
from support import GATEWAY_KEY, OTHER_GATEWAY_KEY

# The Agents SDK would export traces to OpenAI: no test reaches past 127.0.0.1.
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

CHAT_ONLY, NATIVE = "anthropic", "openai"
PATHS = {CHAT_ONLY: "/v1/chat/completions", NATIVE: "/v1/responses"}


@pytest.fixture(scope="module")
def echo():
    with EchoProvider() as fake:
        yield fake


def provider_env(echo):
    return {"GATEWAY_API_KEYS": f"{GATEWAY_KEY},{OTHER_GATEWAY_KEY}",
            "ANTHROPIC_API_KEY": "sk-ant-e2e", "ANTHROPIC_BASE_URL": echo.base_url,
            "OPENAI_API_KEY": "sk-e2e", "OPENAI_BASE_URL": echo.base_url}


@pytest.fixture(scope="module")
def gateway(echo, tmp_path_factory):
    with run_gateway(tmp_path_factory.mktemp("conversations"), **provider_env(echo)) as gw:
        yield gw


def sdk(gateway, key=GATEWAY_KEY):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def async_sdk(gateway, key=GATEWAY_KEY):
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def item_texts(client, conversation_id):
    return [part.text for item in client.conversations.items.list(conversation_id, order="asc")
            for part in item.content]


def test_the_sdks_conversations_resource_works_unchanged(gateway):
    client = sdk(gateway)
    made = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "one"}], metadata={"app": "e2e"})
    client.conversations.items.create(made.id, items=[
        {"type": "message", "role": "assistant", "content": word} for word in ("two", "three")])

    assert made.id.startswith("conv_") and made.metadata == {"app": "e2e"}
    assert client.conversations.retrieve(made.id).id == made.id
    assert client.conversations.update(made.id, metadata={"app": "b"}).metadata == {"app": "b"}
    # The SDK pages with `after` on its own: three pages of one.
    assert [item.content[0].text for item in client.conversations.items.list(
        made.id, order="asc", limit=1)] == ["one", "two", "three"]
    first = client.conversations.items.list(made.id, order="asc").data[0]
    assert client.conversations.items.retrieve(first.id, conversation_id=made.id).id == first.id
    client.conversations.items.delete(first.id, conversation_id=made.id)
    assert item_texts(client, made.id) == ["two", "three"]
    with pytest.raises(openai.NotFoundError):
        sdk(gateway, OTHER_GATEWAY_KEY).conversations.retrieve(made.id)
    assert client.conversations.delete(made.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(made.id)


@pytest.mark.parametrize("provider", [CHAT_ONLY, NATIVE])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_creates_in_a_conversation_carry_its_earlier_turns(gateway, echo, provider, stream):
    client = sdk(gateway)
    made = client.conversations.create()
    marker = f"{provider}-{stream}"

    for turn in ("first", "second"):
        kwargs = {"model": f"{provider}/echo", "input": f"{turn} {marker}",
                  "conversation": made.id}
        if stream:
            with client.responses.stream(**kwargs) as events:
                answer = events.get_final_response()
        else:
            answer = client.responses.create(**kwargs)
        assert answer.output_text == f"heard: {turn} {marker}"

    second_call = echo.bodies(PATHS[provider])[-1]
    assert texts(second_call.get("messages") or second_call.get("input")) == [
        f"first {marker}", f"heard: first {marker}", f"second {marker}"]
    assert item_texts(client, made.id) == [
        f"first {marker}", f"heard: first {marker}", f"second {marker}",
        f"heard: second {marker}"]


def test_input_tokens_and_compact_at_a_provider_that_has_them_and_one_that_does_not(gateway):
    client = sdk(gateway)

    counted = client.responses.input_tokens.count(model="openai/echo",
                                                  input="three words here")
    compacted = client.responses.compact(model="openai/echo", input="a long history")

    assert (counted.object, counted.input_tokens) == ("response.input_tokens", 3)
    assert compacted.output[0].type == "compaction"
    for call in (lambda: client.responses.input_tokens.count(model="anthropic/echo", input="x"),
                 lambda: client.responses.compact(model="anthropic/echo", input="x")):
        with pytest.raises(openai.APIStatusError) as refused:
            call()
        assert refused.value.status_code == 501 and "anthropic" in refused.value.message


def agent_runs(gateways, provider, prompts):
    """Run the agent once per prompt, the i-th run through gateways[i], all in one
    OpenAIConversationsSession (the first run makes it); answer the outputs."""
    from agents import Agent, OpenAIResponsesModel, Runner
    from agents.memory import OpenAIConversationsSession

    async def main():
        outputs, conversation_id = [], None
        for gateway, prompt in zip(gateways, prompts):
            client = async_sdk(gateway)
            agent = Agent(name="echo", instructions="Repeat what you heard.",
                          model=OpenAIResponsesModel(f"{provider}/echo", client))
            session = OpenAIConversationsSession(conversation_id=conversation_id,
                                                 openai_client=client)
            result = await Runner.run(agent, prompt, session=session)
            outputs.append(result.final_output)
            conversation_id = await session._get_session_id()
            await client.close()
        return outputs

    return asyncio.run(main())


@pytest.mark.parametrize("provider", [CHAT_ONLY, NATIVE])
def test_the_agents_sdk_remembers_a_run_in_an_openai_conversations_session(gateway, echo,
                                                                          provider):
    outputs = agent_runs([gateway, gateway], provider, [f"ping {provider}", f"pong {provider}"])

    assert outputs == [f"heard: ping {provider}", f"heard: pong {provider}"]
    second_call = echo.bodies(PATHS[provider])[-1]
    assert texts(second_call.get("messages") or second_call.get("input"))[-3:] == [
        f"ping {provider}", f"heard: ping {provider}", f"pong {provider}"]


def test_two_instances_on_redis_share_a_session(echo, redis_url, tmp_path_factory):
    env = {**provider_env(echo), "STORE_URL": redis_url, "GATEWAY_SECRET": "e2e-secret-shared-by-both-hosts"}
    with run_gateway(tmp_path_factory.mktemp("host-a"), **env) as host_a, \
            run_gateway(tmp_path_factory.mktemp("host-b"), **env) as host_b:
        outputs = agent_runs([host_a, host_b], CHAT_ONLY, ["on a", "on b"])

        assert outputs == ["heard: on a", "heard: on b"]
        second_call = echo.bodies(PATHS[CHAT_ONLY])[-1]
        assert texts(second_call["messages"])[-3:] == ["on a", "heard: on a", "on b"]
        # A conversation made through one host is read, and refused, alike at the other.
        made = sdk(host_a).conversations.create(
            items=[{"type": "message", "role": "user", "content": "shared"}])
        assert item_texts(sdk(host_b), made.id) == ["shared"]
        with pytest.raises(openai.NotFoundError):
            sdk(host_b, OTHER_GATEWAY_KEY).conversations.retrieve(made.id)

        # Sixteen creates at once in one conversation, half through each host: every turn
        # appended whole, once, none lost.
        busy = sdk(host_a).conversations.create()

        def turn(i):
            host = (host_a, host_b)[i % 2]
            return sdk(host).responses.create(model=f"{CHAT_ONLY}/echo", input=f"turn {i}",
                                              conversation=busy.id).output_text

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(turn, range(16)))
        assert answers == [f"heard: turn {i}" for i in range(16)]
        kept = item_texts(sdk(host_b), busy.id)
        pairs = [kept[i:i + 2] for i in range(0, len(kept), 2)]
        assert sorted(pairs) == sorted([f"turn {i}", f"heard: turn {i}"] for i in range(16))
