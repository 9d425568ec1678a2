"""Webhooks, piece by piece (webhooks.py), on a real store and a receiver on 127.0.0.1 that
verifies each attempt with the official SDK; through gunicorn in
test_webhooks_end_to_end.py."""

import base64
import json

import openai
import pytest
import responses

from config import ConfigError, Settings
from fake_receiver import SECRET, Receiver
from store import open_store
from support import ENV, base_url
from webhooks import EVENT, WATCH, Config, Notifier, event_id, signature


class Clock:
    def __init__(self):
        import time

        self.now = time.time()

    def __call__(self):
        return self.now


def config(url, **changes):
    from webhooks import decoded_secret

    return Config(urls=(url,), secrets=(decoded_secret(SECRET),), max_age=3600,
                  retry_base=5, timeout=2, concurrency=4, watch_every=5)._replace(**changes)


@pytest.fixture
def store(tmp_path):
    return open_store(f"sqlite:///{tmp_path}/store.sqlite3", ttl=3600)


@pytest.fixture
def clock():
    return Clock()


def notifier_for(cfg, store, clock, upstreams=None):
    """A Notifier whose work this test does itself, in order: no threads of its own."""
    notifier = Notifier(cfg, store, upstreams or {}, None, clock)
    notifier.start = lambda: None
    return notifier


def sender(notifier):
    from webhooks import Sender

    return Sender(notifier, notifier.config.urls[0])


def deliver(notifier, clock):
    """Claim what is due now and attempt each, here, in order."""
    one = sender(notifier)
    due = notifier.store.queue.claim(one.kind, clock(), 100, 30)
    for item in due:
        one.attempt(item)
    return len(due)


# Configuration.

@pytest.mark.parametrize("variables, says", [
    ({"WEBHOOK_URL": "http://127.0.0.1:9/h"}, "WEBHOOK_SECRET is not"),
    ({"WEBHOOK_SECRET": SECRET}, "WEBHOOK_URL is not"),
    ({"WEBHOOK_URL": "ftp://x/h", "WEBHOOK_SECRET": SECRET}, "http:// or https://"),
    ({"WEBHOOK_URL": "http://127.0.0.1:9/h", "WEBHOOK_SECRET": "secret"}, "whsec_"),
    ({"WEBHOOK_URL": "http://127.0.0.1:9/h", "WEBHOOK_SECRET": "whsec_%%%"}, "base64"),
    ({"WEBHOOK_URL": "http://127.0.0.1:9/h", "WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "16 bytes"),
    ({"WEBHOOK_URL": "http://127.0.0.1:9/h", "WEBHOOK_SECRET": SECRET,
      "WEBHOOK_RETRY_BASE": "soon"}, "WEBHOOK_RETRY_BASE"),
])
def test_bad_settings_stop_the_start_with_one_line(tmp_path, variables, says):
    with pytest.raises(ConfigError) as stopped:
        Settings.from_env({**ENV, "STORE_URL": f"sqlite:///{tmp_path}/s.sqlite3", **variables})

    assert says in str(stopped.value) and "\n" not in str(stopped.value)


def test_no_webhook_settings_means_no_notifier(tmp_path):
    settings = Settings.from_env({**ENV, "STORE_URL": f"sqlite:///{tmp_path}/s.sqlite3"})

    assert settings.notifier is None and settings.runner.on_end is None


# Signing, as the SDK verifies it.

def test_every_secret_signs_so_the_sdk_verifies_with_either_while_rotating():
    import time

    new = "whsec_" + base64.b64encode(b"n" * 32).decode()
    from webhooks import decoded_secret

    body, stamp = '{"id":"evt_1"}', str(int(time.time()))
    header = signature((decoded_secret(new), decoded_secret(SECRET)), "evt_1", stamp, body)
    headers = {"webhook-id": "evt_1", "webhook-timestamp": stamp, "webhook-signature": header}
    sdk = openai.OpenAI(api_key="x", base_url="http://127.0.0.1:9/v1")

    for secret in (new, SECRET):
        assert sdk.webhooks.unwrap(body, headers, secret=secret).id == "evt_1"
    with pytest.raises(openai.InvalidWebhookSignatureError):
        sdk.webhooks.unwrap(body.replace("1", "2"), headers, secret=SECRET)


# The outbox: one event per ending, delivered at least once.

def test_an_ending_is_queued_once_per_endpoint_with_ids_only(store, clock):
    notifier = notifier_for(config("http://127.0.0.1:9/a")._replace(
        urls=("http://127.0.0.1:9/a", "http://127.0.0.1:9/b")), store, clock)

    notifier.ended("resp_1", "completed")
    notifier.ended("resp_1", "completed")  # seen again, by another path
    notifier.ended("resp_2", "in_progress")  # no ending: nothing

    for url in ("http://127.0.0.1:9/a", "http://127.0.0.1:9/b"):
        [due] = store.queue.claim(f"{EVENT}:{url}", clock.now, 10, 30)
        assert json.loads(due.payload["body"]) == {
            "id": event_id("resp_1"), "object": "event", "type": "response.completed",
            "created_at": int(clock.now), "data": {"id": "resp_1"}}


def test_a_failed_attempt_is_retried_with_backoff_and_the_same_id(store, clock):
    with Receiver(answers=[500, 503, "hang"], hang=3) as receiver:
        notifier = notifier_for(config(receiver.url), store, clock)
        notifier.ended("resp_r", "failed")

        waits = []
        for _ in range(4):
            while not deliver(notifier, clock):
                clock.now += 1
                waits.append(clock.now)
        delivered = receiver.delivered()

    assert [a.answered for a in receiver.attempts] == [500, 503, None, 200]
    assert all(a.verified for a in receiver.attempts)
    assert {a.headers["webhook-id"] for a in receiver.attempts} == {event_id("resp_r")}
    assert [e.type for e in delivered] == ["response.failed"]
    assert delivered[0].data.id == "resp_r"
    assert len(waits) == 5 + 10 + 20  # retry_base, doubled each time
    assert store.queue.depth(f"{EVENT}:{receiver.url}") == 0


def test_a_retry_hours_later_is_signed_at_its_own_time(store, clock):
    """The SDK accepts a timestamp within 300 s of its own clock: each attempt is signed
    with the time it is made, under the event's one id."""
    with Receiver(answers=[500]) as receiver:
        notifier = notifier_for(config(receiver.url, retry_base=3 * 3600, max_age=72 * 3600),
                                store, clock)
        clock.now -= 3 * 3600  # it ended, and was first sent, three hours ago
        notifier.ended("resp_late", "cancelled")
        deliver(notifier, clock)
        clock.now += 3 * 3600  # its retry: due now
        deliver(notifier, clock)

    first, second = receiver.attempts
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"]) \
        == 3 * 3600
    assert not first.verified  # signed three hours before the receiver's clock
    assert second.verified and second.answered == 200


def test_an_event_past_its_max_age_is_dropped_and_counted(store, clock):
    from metrics import WEBHOOK_DROPPED

    with Receiver(answers=[500, 500, 500]) as receiver:
        notifier = notifier_for(config(receiver.url, retry_base=10, max_age=25), store, clock)
        notifier.ended("resp_d", "completed")
        dropped = WEBHOOK_DROPPED._value.get()
        deliver(notifier, clock)  # fails: retried 10 s on
        clock.now += 10
        deliver(notifier, clock)  # fails: the next wait (20 s) would pass 25 s: dropped
        clock.now += 3600

        assert deliver(notifier, clock) == 0
    assert len(receiver.attempts) == 2
    assert WEBHOOK_DROPPED._value.get() == dropped + 1


def test_a_redirect_is_not_followed(store, clock):
    with Receiver(answers=[302]) as receiver:
        notifier = notifier_for(config(receiver.url), store, clock)
        notifier.ended("resp_302", "completed")
        deliver(notifier, clock)
        clock.now += 5
        deliver(notifier, clock)

    assert [a.answered for a in receiver.attempts] == [302, 200]  # retried here, not there


# Watching background responses until they end.

def test_a_provider_background_response_is_asked_until_it_ends_then_evented(
        store, clock, make_client):
    settings = make_client().application.extensions["gateway"]
    notifier = notifier_for(config("http://127.0.0.1:9/h"), store, clock, settings.upstreams)
    store.record("resp_w", "openai", {"id": "resp_w", "status": "queued"}, owner="o")
    notifier.watch("resp_w", "openai", gateway_run=False)
    url = f"{base_url('openai')}/responses/resp_w"
    body = {"id": "resp_w", "object": "response", "created_at": 1, "model": "m", "output": []}

    with responses.RequestsMock() as mock:
        mock.get(url, json={**body, "status": "in_progress"})
        assert notifier.watch_round() is False  # not due yet
        clock.now += 5
        assert notifier.watch_round() is True
        mock.get(url, json={**body, "status": "completed"})
        clock.now += 5
        notifier.watch_round()

    assert store.get("resp_w").status == "completed"
    assert store.get("resp_w").owner == "o"  # stored as it was: its maker's
    [event] = store.queue.claim(f"{EVENT}:http://127.0.0.1:9/h", clock.now, 10, 30)
    assert json.loads(event.payload["body"])["type"] == "response.completed"
    clock.now += 60
    assert store.queue.claim(WATCH, clock.now, 10, 30) == []  # watched no more


def test_a_response_deleted_at_its_provider_is_watched_no_more_and_evented_never(
        store, clock, make_client):
    settings = make_client().application.extensions["gateway"]
    notifier = notifier_for(config("http://127.0.0.1:9/h"), store, clock, settings.upstreams)
    store.record("resp_gone", "openai", {"id": "resp_gone", "status": "queued"})
    notifier.watch("resp_gone", "openai", gateway_run=False)
    clock.now += 5

    with responses.RequestsMock() as mock:
        mock.get(f"{base_url('openai')}/responses/resp_gone", status=404,
                 json={"error": {"message": "No response found"}})
        notifier.watch_round()

    assert store.queue.depth(WATCH) == 0
    assert store.queue.depth(f"{EVENT}:http://127.0.0.1:9/h") == 0
