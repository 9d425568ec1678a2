"""Webhooks through gunicorn as the Procfile starts it, to a receiver on 127.0.0.1 that verifies
every attempt with the official SDK: one event per ending, at a provider that runs background
responses and where the gateway runs them; receivers that fail, hang, or are down a while;
a gateway killed between an ending and its delivery; two instances on Redis."""

import os
import signal
import time

import openai
import pytest
import requests

from fake_receiver import SECRET, Receiver
from gateway_process import free_port, run_gateway

GATEWAY_KEY = "gw-webhook-key-0001"
FAST = {"WEBHOOK_RETRY_BASE": "1", "WEBHOOK_TIMEOUT": "1", "WEBHOOK_WATCH_EVERY": "0.5",
        "BACKGROUND_LEASE": "2"}


def env(streamer, provider, receiver_url, **extra):
    return {"GATEWAY_API_KEYS": GATEWAY_KEY, "WEBHOOK_URL": receiver_url,
            "WEBHOOK_SECRET": SECRET, **FAST,
            "ANTHROPIC_API_KEY": "sk-ant-wh", "ANTHROPIC_BASE_URL": streamer.base_url,
            "OPENAI_API_KEY": "sk-wh", "OPENAI_BASE_URL": provider.base_url, **extra}


def sdk(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)


def events_for(receiver, response_id):
    return [e for e in receiver.delivered() if e.data.id == response_id]


def wait_for_event(receiver, response_id, seconds=30):
    deadline = time.monotonic() + seconds
    while not events_for(receiver, response_id):
        assert time.monotonic() < deadline, f"no event for {response_id}: {receiver.attempts}"
        time.sleep(0.05)
    return events_for(receiver, response_id)


@pytest.fixture(scope="module")
def receiver():
    with Receiver() as found:
        yield found


@pytest.fixture(scope="module")
def gateway(streamer, provider, receiver, tmp_path_factory):
    with run_gateway(tmp_path_factory.mktemp("webhooks"),
                     **env(streamer, provider, receiver.url)) as gw:
        yield gw


@pytest.mark.parametrize("model, ending", [
    ("words-3-10", "completed"), ("fail-3-10", "failed"), ("length-3-10", "incomplete")])
def test_a_gateway_run_sends_one_event_as_it_ends(gateway, receiver, model, ending):
    created = sdk(gateway).responses.create(model=f"anthropic/{model}", input=f"wh-{model}",
                                            background=True)

    [event] = wait_for_event(receiver, created.id)
    time.sleep(1.5)  # a second look by the watch, and the run's own, must not send again

    assert event.type == f"response.{ending}" and event.object == "event"
    assert event.id.startswith("evt_") and event.data.id == created.id
    assert len(events_for(receiver, created.id)) == 1
    assert sdk(gateway).responses.retrieve(created.id).status == ending
    sent = [a for a in receiver.attempts if a.verified and a.event.data.id == created.id]
    assert set(sent[0].body.decode()) and "w0" not in sent[0].body.decode()  # ids only


def test_a_cancelled_gateway_run_sends_response_cancelled(gateway, receiver, streamer):
    created = sdk(gateway).responses.create(model="anthropic/words-500-20", input="wh-cancel",
                                            background=True)
    streamer.wait_for("wh-cancel", lambda s: s.sent >= 2)

    sdk(gateway).responses.cancel(created.id)

    [event] = wait_for_event(receiver, created.id)
    assert event.type == "response.cancelled"


@pytest.mark.parametrize("ending", ["completed", "cancelled", "failed", "incomplete"])
def test_a_providers_background_response_is_watched_until_it_ends(gateway, receiver, provider,
                                                                  ending):
    created = sdk(gateway).responses.create(model="openai/m", input="wh-native",
                                            background=True)
    assert created.status == "queued"
    time.sleep(1.2)  # watched a few times while it runs
    assert not events_for(receiver, created.id)

    if ending == "cancelled":
        sdk(gateway).responses.cancel(created.id)
    else:
        provider.statuses[created.id] = ending  # it ends at the provider, unasked

    [event] = wait_for_event(receiver, created.id)
    time.sleep(1)
    assert event.type == f"response.{ending}"
    assert len(events_for(receiver, created.id)) == 1
    assert sdk(gateway).responses.retrieve(created.id).status == ending


def test_a_receiver_that_fails_then_hangs_gets_the_event_on_a_later_attempt(
        streamer, provider, tmp_path_factory):
    with Receiver(answers=[500, 503, "hang"], hang=3) as receiver, \
            run_gateway(tmp_path_factory.mktemp("flaky"),
                        **env(streamer, provider, receiver.url)) as gateway:
        created = sdk(gateway).responses.create(model="anthropic/words-2-0", input="wh-flaky",
                                                background=True)
        [event] = wait_for_event(receiver, created.id, seconds=40)
        time.sleep(0.5)  # the delivery's own bookkeeping, after the receiver's answer
        metrics = requests.get(f"{gateway.url}/metrics", timeout=5).text

    assert event.type == "response.completed"
    attempts = [a for a in receiver.attempts if a.verified]
    assert len(attempts) == 4 and {a.headers["webhook-id"] for a in attempts} == {event.id}
    gaps = [int(b.headers["webhook-timestamp"]) - int(a.headers["webhook-timestamp"])
            for a, b in zip(attempts, attempts[1:])]
    assert gaps[0] >= 1 and gaps[1] >= 2  # backed off: 1 s, then 2 s
    assert "gateway_webhook_events_delivered_total 1.0" in metrics
    assert "gateway_webhook_attempts_failed_total 3.0" in metrics
    assert 'gateway_webhook_delivery_seconds_count 1.0' in metrics


def test_a_receiver_down_for_a_while_gets_the_event_once_it_is_back(
        streamer, provider, tmp_path_factory):
    port = free_port()
    with run_gateway(tmp_path_factory.mktemp("down"),
                     **env(streamer, provider, f"http://127.0.0.1:{port}/hooks")) as gateway:
        created = sdk(gateway).responses.create(model="anthropic/words-2-0", input="wh-down",
                                                background=True)
        time.sleep(3)  # refused connections meanwhile
        with Receiver(port=port) as receiver:
            [event] = wait_for_event(receiver, created.id, seconds=40)

    assert event.type == "response.completed"


def test_a_gateway_killed_before_delivering_delivers_after_its_restart(
        streamer, provider, tmp_path_factory):
    port, folder = free_port(), tmp_path_factory.mktemp("killed")
    settings = env(streamer, provider, f"http://127.0.0.1:{port}/hooks",
                   WEBHOOK_RETRY_BASE="8")  # its next attempt comes after the kill and the restart
    with run_gateway(folder, **settings) as gateway:
        created = sdk(gateway).responses.create(model="anthropic/words-2-0", input="wh-kill",
                                                background=True)
        deadline = time.monotonic() + 10
        while sdk(gateway).responses.retrieve(created.id).status != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1)  # its first attempt is refused: the receiver is not up
        children = open(f"/proc/{gateway.proc.pid}/task/{gateway.proc.pid}/children").read()
        for pid in [gateway.proc.pid, *map(int, children.split())]:
            os.kill(pid, signal.SIGKILL)
        gateway.proc.wait(timeout=10)

    with Receiver(port=port) as receiver, \
            run_gateway(folder, **{**settings, "WEBHOOK_RETRY_BASE": "1"}):
        # Due 8 s after the first attempt, by the outbox in the store: the restart keeps it.
        [event] = wait_for_event(receiver, created.id, seconds=45)

    assert event.type == "response.completed"


def test_two_instances_on_redis_deliver_each_event_once(streamer, provider, redis_url,
                                                        tmp_path_factory):
    shared = {"STORE_URL": redis_url, "GATEWAY_SECRET": "webhook-hosts-share-this-0001"}
    with Receiver() as receiver:
        settings = env(streamer, provider, receiver.url, **shared)
        with run_gateway(tmp_path_factory.mktemp("r1"), **settings) as first, \
                run_gateway(tmp_path_factory.mktemp("r2"), **settings) as second:
            ids = [sdk((first, second)[i % 2]).responses.create(
                model="anthropic/words-2-0", input=f"wh-redis-{i}", background=True).id
                for i in range(20)]
            for response_id in ids:
                wait_for_event(receiver, response_id)
            time.sleep(2)  # any second delivery would have come by now

    assert sorted(e.data.id for e in receiver.delivered()) == sorted(ids)
    assert all(a.verified for a in receiver.attempts)
