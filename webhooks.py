"""Webhooks when a background response ends, signed as OpenAI signs them (Standard Webhooks),
so that the official SDK's `client.webhooks.unwrap()` verifies them. Nothing here knows
Flask.

Every background response made through the gateway is watched until it ends: a WATCH
item in the store's queue, due every `watch_every` seconds. A gateway run is read from
the store (and failed by the runner's lease if its process died); a response its
provider runs is asked of the provider, and stored as it answered. The runner also
says at once when a run ends. Whoever sees the ending first queues one EVENT item per
endpoint (keyed by endpoint and response, so a response's ending is queued once,
whoever else sees it), holding the exact body to send, ids only:

    {"id": "evt_...", "object": "event", "type": "response.completed",
     "created_at": 1733100000, "data": {"id": "resp_..."}}

Delivery is at least once. Each process claims due events, at most `concurrency` at
once an endpoint (a claim holds an event for the attempt's timeout and a margin, so
two processes, or two hosts, never send one at the same time), and POSTs each with
webhook-id (the event's id, the same on every attempt), webhook-timestamp (the time of
the attempt, so a retry hours later still falls in the SDK's 300-s tolerance) and
webhook-signature (v1, HMAC-SHA256 of "id.timestamp.body" under each secret). A 2xx
answer delivers it; anything else (another status, a redirect, which is not followed,
a timeout, a refused connection) is retried after `retry_base` seconds, doubling each
time up to an hour, until the event is `max_age` seconds old: then it is dropped, and
counted. The outbox lives in the store: a restart, or a SIGKILL, loses no event.
"""

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from typing import NamedTuple

import requests

import conversations
import metrics
from providers import PROVIDERS
from providers.errors import NotFound, ProviderError
from schemas import contract_response
from store import DELETED, FINAL, StoreError

log = logging.getLogger("gateway.webhooks")

WATCH, EVENT = "webhook-watch", "webhook-event"  # the store queue's kinds
ENDINGS = frozenset(FINAL - {DELETED})  # completed, cancelled, failed, incomplete
MAX_WAIT = 3600.0  # the longest wait between two attempts
LEASE_MARGIN = 10.0  # seconds a claim holds an event beyond its attempt's timeout
ROUND = 0.5  # seconds between two looks for due work, at most
CLAIM_WATCHES = 100  # background responses one look checks, at most
MIN_SECRET_BYTES = 16


class Config(NamedTuple):
    """Where and how to send webhooks (WEBHOOK_* settings, read by config.py)."""

    urls: tuple  # endpoints, each sent every event
    secrets: tuple  # the secrets, decoded; an event is signed with each (rotation)
    max_age: float  # seconds an event is retried for; then dropped
    retry_base: float  # seconds before the first retry; each later wait doubles
    timeout: float  # seconds one attempt may take
    concurrency: int  # attempts at once, per endpoint and process
    watch_every: float  # seconds between two looks at a background response
    verify: object = True  # how to verify an endpoint's TLS (the providers' CA bundle)


def decoded_secret(value):
    """The key in a secret as OpenAI issues them, "whsec_" and base64; ValueError if not."""
    if not value.startswith("whsec_"):
        raise ValueError("must start with whsec_, followed by base64 (as OpenAI issues them)")
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise ValueError("must be whsec_ followed by base64") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"must hold at least {MIN_SECRET_BYTES} bytes after whsec_")
    return key


def signature(secrets, webhook_id, timestamp, body):
    """The webhook-signature header: "v1,<base64 HMAC-SHA256>" for each secret."""
    signed = f"{webhook_id}.{timestamp}.{body}".encode()
    return " ".join("v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
                    .decode() for key in secrets)


def event_id(response_id):
    """A response's ending's event id: the same whichever process queues it first."""
    return "evt_" + hashlib.sha256(f"ended:{response_id}".encode()).hexdigest()[:32]


class Notifier:
    """Watches background responses until they end, and delivers their events."""

    def __init__(self, config, store, upstreams, runner, clock=time.time):
        self.config, self.store, self.upstreams, self.runner = config, store, upstreams, runner
        self.clock = clock
        self._pid = None
        self._setup = threading.Lock()

    # What requests and runs tell it.

    def watch(self, response_id, provider, gateway_run):
        """Watch a background response until it ends (queued once per response)."""
        payload = {"provider": provider, "run": gateway_run}
        self.store.queue.add(WATCH, response_id, payload, self.clock() + self.config.watch_every,
                             self.config.max_age)
        self.start()

    def watching(self, source, provider):
        """Pass a background stream's events through, watching the response the first one
        that carries a Response names."""
        watched = False
        for event in source:
            response = event.get("response") if isinstance(event, dict) else None
            if not watched and isinstance(response, dict) and response.get("id"):
                watched = True
                try:
                    self.watch(response["id"], provider, gateway_run=False)
                except StoreError as exc:
                    log.warning("background response %s is not watched: %s", response["id"], exc)
            yield event

    def ended(self, response_id, status):
        """Queue the ending's event for every endpoint, if `status` is an ending."""
        if status not in ENDINGS:
            return
        now = self.clock()
        body = json.dumps({"id": event_id(response_id), "object": "event",
                           "type": f"response.{status}", "created_at": int(now),
                           "data": {"id": response_id}}, separators=(",", ":"))
        for url in self.config.urls:
            payload = {"url": url, "id": event_id(response_id), "body": body, "ended_at": now}
            self.store.queue.add(self._kind(url), response_id, payload, now, self.config.max_age)
        self.start()

    # This process's threads: a watcher, and a sender per endpoint.

    def start(self):
        """Start this process's threads, once per process (gunicorn forks after app
        creation: post_worker_init starts them in each worker)."""
        if self._pid == os.getpid():
            return
        with self._setup:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            threading.Thread(target=self._forever, args=(self.watch_round,),
                             name="webhook-watch", daemon=True).start()
            for url in self.config.urls:
                sender = Sender(self, url)
                threading.Thread(target=self._forever, args=(sender.round,),
                                 name="webhook-send", daemon=True).start()

    def _forever(self, step):
        while True:
            try:
                busy = step()
            except StoreError as exc:  # the store is down: try again in a while
                log.warning("webhooks: %s", exc)
                busy = False
            except Exception:  # noqa: BLE001 (a bug must not end the thread)
                log.exception("webhooks: a round failed")
                busy = False
            if not busy:
                time.sleep(ROUND)

    def watch_round(self):
        """Look at the background responses due a look; True if there were any."""
        due = self.store.queue.claim(WATCH, self.clock(), CLAIM_WATCHES,
                                     self.config.timeout + LEASE_MARGIN)
        for item in due:
            self._look(item)
        return bool(due)

    def _look(self, item):
        """Queue a watched response's event if it has ended; else look again later."""
        response_id, now = item.key, self.clock()
        try:
            status = self._status(response_id, item.payload)
        except ProviderError as exc:
            log.warning("background response %s could not be looked at: %s", response_id,
                        exc.message)
            status = "unknown"
        if status in ENDINGS:
            self.ended(response_id, status)
        if status in ENDINGS or status is None or now - item.created_at > self.config.max_age:
            self.store.queue.done(WATCH, response_id)
        else:
            self.store.queue.retry(WATCH, response_id, now + self.config.watch_every)

    def _status(self, response_id, watched):
        """A watched response's status now; None if it is gone (deleted, expired)."""
        entry = self.store.get(response_id)
        if entry is None or entry.status == DELETED:
            return None
        if entry.status in ENDINGS:
            return entry.status  # seen ended already: by a client, or the run itself
        if watched["run"]:
            return self.runner.settle(response_id, entry).status  # failed if its host died
        upstream = self.upstreams.get(watched["provider"])
        if upstream is None:
            return "unknown"  # its provider is not configured here (another host's?)
        try:
            body = PROVIDERS[upstream.name].retrieve(upstream, response_id)
        except NotFound:
            return None
        response = contract_response(body, response_id, upstream.name)
        stored = self.store.record(response_id, upstream.name, response).body
        conversations.turn_ended(self.store, response_id, stored)
        return stored.get("status")

    def _kind(self, url):
        return f"{EVENT}:{url}"


class Sender:
    """Delivers one endpoint's due events, at most `concurrency` at once in this process."""

    def __init__(self, notifier, url):
        self.notifier, self.url, self.kind = notifier, url, notifier._kind(url)
        self.config = notifier.config
        self.free = self.config.concurrency  # attempts it may start now
        self.lock = threading.Lock()
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy or netrc read per call
        self.session.verify = self.config.verify
        self.next_depth = 0.0

    def round(self):
        """Claim as many due events as there are free slots, and send each in a thread of
        its own; True if all slots were filled (there may be more)."""
        now = self.notifier.clock()
        if now >= self.next_depth:  # the outbox's depth, for /metrics, every few seconds
            metrics.WEBHOOK_OUTBOX.set(self.notifier.store.queue.depth(self.kind))
            self.next_depth = now + 5
        with self.lock:
            free = self.free
        if not free:
            return False
        due = self.notifier.store.queue.claim(self.kind, now, free,
                                              self.config.timeout + LEASE_MARGIN)
        for item in due:
            with self.lock:
                self.free -= 1
            threading.Thread(target=self._send, args=(item,), name="webhook-attempt",
                             daemon=True).start()
        return len(due) == free

    def _send(self, item):
        try:
            self.attempt(item)
        except StoreError as exc:  # the claim's lease will hand it out again
            log.warning("webhook %s: %s", item.payload["id"], exc)
        finally:
            with self.lock:
                self.free += 1

    def attempt(self, item):
        """One attempt to deliver an event; done, retried later, or dropped."""
        payload, now = item.payload, self.notifier.clock()
        timestamp = str(int(now))
        headers = {"Content-Type": "application/json", "User-Agent": "gateway-webhooks",
                   "webhook-id": payload["id"], "webhook-timestamp": timestamp,
                   "webhook-signature": signature(self.config.secrets, payload["id"],
                                                  timestamp, payload["body"])}
        try:
            resp = self.session.post(self.url, data=payload["body"].encode(), headers=headers,
                                     timeout=(min(5.0, self.config.timeout),
                                              self.config.timeout),
                                     allow_redirects=False)
            resp.close()
            failure = None if 200 <= resp.status_code < 300 else f"HTTP {resp.status_code}"
        except requests.RequestException as exc:
            failure = type(exc).__name__
        queue = self.notifier.store.queue
        if failure is None:
            queue.done(self.kind, item.key)
            metrics.WEBHOOK_DELIVERED.inc()
            metrics.WEBHOOK_LATENCY.observe(max(0.0, self.notifier.clock() - payload["ended_at"]))
            return
        metrics.WEBHOOK_FAILED.inc()
        wait = min(self.config.retry_base * 2 ** item.attempts, MAX_WAIT)
        if now + wait - item.created_at > self.config.max_age:
            queue.done(self.kind, item.key)
            metrics.WEBHOOK_DROPPED.inc()
            log.warning("webhook %s to %s dropped after %d attempts: %s", payload["id"],
                        self.url, item.attempts + 1, failure)
            return
        queue.retry(self.kind, item.key, now + wait)
