"""A create answered as a stream: server-sent events in the Responses API's format.

The view opens the provider's stream first, so a refusal is still the usual
error envelope and status; then one of these sources of events goes to sse(),
whose bytes Flask streams to the client:

- passthrough(): a provider with a Responses API. Its own events go out as they
  arrive, with `provider` stamped into every Response object they carry.
- translated(): a provider with only Chat Completions. Its chunks go out as
  Responses events (providers/events.py), under the id the gateway minted.
- following(): a background response the gateway runs. Its progress goes out as
  the run goes on; the run outlives the client.

Each source stores the response as its maker's from its first event (unless
store: false), and as it ended, so retrieve and cancel find it while it streams
and later, and no other key can.
An upstream failure after the first byte ends the stream with an `error`
event. When the client goes away, gunicorn closes sse(), which closes the
source at once: the upstream connection is shut, so the provider stops
generating. Nothing here knows Flask.
"""

import json
import logging
import os
import queue
import threading
import time

import conversations
from background import NOTHING_KEPT, run_error
from owners import stored_as
from providers import keeps_nothing, withdraw
from providers.errors import BadGateway, ProviderError
from providers.events import EventWriter
from schemas import contract_response
from store import StoreError

log = logging.getLogger("gateway.streams")

KEEPALIVE = 15.0  # seconds of provider silence before a comment keeps routers from timing out
END = object()  # the source has ended
KEEP = object()  # the source has been silent for its keep-alive


def sse(source, stop, keepalive=KEEPALIVE):
    """The stream's bytes: each event of `source` (a dict, or a frame() already made), and
    a comment whenever none comes for `keepalive` seconds. `stop()` ends the source (from
    this thread) when the stream ends."""
    events = queue.SimpleQueue()
    silence = SILENCES.watch(events, keepalive)

    def pump():  # reads the provider, so this thread can speak while the provider is silent
        try:
            for event in source:
                silence[2] = time.monotonic()  # heard from: no keep-alive due yet
                events.put(event)
        except Exception:
            log.exception("stream source failed")
        finally:
            events.put(END)

    threading.Thread(target=pump, name="stream-pump", daemon=True).start()
    try:
        while (event := events.get()) is not END:
            if event is KEEP:
                yield b": keep-alive\n\n"
            else:
                yield event if isinstance(event, bytes) else frame(event)
    finally:  # the end, or the client went away (GeneratorExit)
        SILENCES.forget(silence)
        stop()


def frame(event, data=None):
    """One server-sent event: its `data` bytes as a provider sent them, or it encoded."""
    if data is None:
        data = json.dumps(event).encode()
    kind = event.get("type")
    if not (isinstance(kind, str) and kind.isprintable()):  # a line break would end the field
        return b"data: " + data + b"\n\n"
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


class Silences:
    """The streams of this process that may fall silent, and one thread that tells each
    when it has been, for its keep-alive: a timed wait for every event read would cost
    every event of every stream a timer (py-spy: 6 % of a worker at 1,000 streams)."""

    def __init__(self):
        self._streams, self._lock, self._pid = {}, threading.Lock(), None
        self._sooner = threading.Event()  # a stream's keep-alive is due before the next look
        self._every = 1.0  # seconds between two looks: a quarter of the shortest keep-alive

    def watch(self, events, keepalive):
        """Watch a stream's queue; answer its entry, whose [2] is when it was last heard."""
        entry = [events, keepalive, time.monotonic()]
        with self._lock:
            self._streams[id(entry)] = entry
            if self._pid != os.getpid():  # one thread a process (gunicorn forks)
                self._pid, self._sooner = os.getpid(), threading.Event()
                threading.Thread(target=self._run, name="stream-silences", daemon=True).start()
            if keepalive / 4 < self._every:
                self._every = keepalive / 4
                self._sooner.set()
        return entry

    def forget(self, entry):
        with self._lock:
            self._streams.pop(id(entry), None)

    def _run(self):
        while True:
            self._sooner.wait(self._every)
            self._sooner.clear()
            with self._lock:
                entries = list(self._streams.values())
                self._every = min([1.0, *(keepalive / 4 for _, keepalive, _ in entries)])
            now = time.monotonic()
            for entry in entries:
                if now - entry[2] >= entry[1]:
                    entry[2] = now
                    entry[0].put(KEEP)


SILENCES = Silences()


def passthrough(generation, provider, store, owner=None, kept=NOTHING_KEPT, created=False):
    """A Responses API provider's events as they come, `provider` stamped where a Response
    appears, under the provider's own id.

    The response is stored as `owner`'s from the first event that carries it, with
    its input where `kept` (a store.Kept) holds items, then as it ended (store None:
    store: false, nothing is kept), and appended to its conversation if it has one.
    Where the provider keeps nothing, one that fails or whose client leaves is stored
    with the output it had. A created stream whose first write fails may stop there
    (_claim). An event the gateway does not change goes out as the provider's bytes.
    """
    sequence, response_id = -1, None
    try:
        for event, data, _ in generation.events():
            sequence = event.get("sequence_number", sequence + 1)
            if isinstance(event.get("response"), dict):
                event = {**event, "response": {**event["response"], "provider": provider}}
                if response_id is None and store is not None:
                    response_id = _id_of(event["response"])
                    if response_id and not _claim(generation, provider, store, owner, kept,
                                                  event["response"], created):
                        # In the first event's place: nothing of the response went out.
                        yield _store_error(sequence, "the response was not kept")
                        return
                yield event
            else:
                yield frame(event, data)
        if generation.closed:  # the client went away
            _partial(generation, provider, store, response_id, owner, kept, "incomplete")
            return
        generation.reader.final()  # raises if the stream ended before its final event
    except ProviderError as exc:
        error = run_error(exc)
        _partial(generation, provider, store, response_id, owner, kept, "failed", error)
        yield {"type": "error", "sequence_number": sequence + 1, "param": None, **error}
        return
    last = generation.reader.last
    if store is not None and _id_of(last):
        _ended(store, _keep(store, last["id"], provider, last, owner), kept)


def translated(generation, provider, store, owner=None, kept=NOTHING_KEPT):
    """A Chat-only provider's chunks as Responses events, under the id the gateway minted.

    The response is stored as `owner`'s, with its input where `kept` (a store.Kept)
    holds items, before its first event, then as it ended (store None: store: false,
    nothing is kept); one that fails or whose client leaves, with the output it had. It
    is appended to its conversation if it has one.
    """
    writer, response_id = EventWriter(), generation.response_id
    started = contract_response({**generation.queued(), "status": "in_progress"},
                                response_id, provider)
    _record(store, response_id, provider, started, owner, kept)
    yield from writer.start(started)
    try:
        for changes in generation.changes():
            yield from writer.apply(changes)
        if generation.closed:  # the client went away
            left = generation.reader.response("incomplete")
            _ended(store, _keep(store, response_id, provider, left, owner), kept)
            return
        final = contract_response(generation.final(), response_id, provider)
    except ProviderError as exc:
        failed = {**(generation.reader.response("failed")), "error": run_error(exc)}
        _keep(store, response_id, provider, failed, owner)
        yield writer.error(**run_error(exc))
        return
    yield from writer.finish(_ended(store, _record(store, response_id, provider, final, owner),
                                    kept))


def following(runner, response_id, after, stopped):
    """A background response the gateway runs, as the run goes on: its events numbered
    after `after`, until it ends or `stopped` is set (the client left: the run goes on
    without it). Every reader gets the same events under the same numbers."""
    try:
        for event in runner.replay(response_id, after, stopped):
            after = event["sequence_number"]
            yield event
    except StoreError as exc:
        log.warning("stream of %s: %s", response_id, exc)
        yield _store_error(after + 1, "retrieve the response later")


def _claim(generation, provider, store, owner, kept, response, created):
    """Store a stream's response as `owner`'s at its first event, and its input. False
    where that failed for a response just created at a provider that keeps it for
    whoever asks for its id, while each key sees only its own: the stream stops, and
    the response is withdrawn there, since nobody could tell later whose it is."""
    try:
        _keep(store, response["id"], provider, response, owner, kept, strict=True)
        return True
    except StoreError:
        if not created or owner is None or keeps_nothing(provider):
            return True
    generation.close()
    try:
        withdraw(generation.upstream, response["id"])
        log.warning("streamed response %s was withdrawn at %s: the store could not record "
                    "whose it is", response["id"], provider)
    except ProviderError as exc:
        log.error("streamed response %s at %s could not be recorded nor withdrawn (%s): any "
                  "key that asks for its id may be given it", response["id"], provider,
                  exc.message)
    return False


def _partial(generation, provider, store, response_id, owner, kept, status, error=None):
    """Store, as `status`, what a passed-through stream had where its provider keeps
    nothing (the store's copy is all there is); where it keeps responses, it knows."""
    if store is not None and response_id and keeps_nothing(provider):
        had = {**generation.reader.response(status), "error": error}
        _ended(store, _keep(store, response_id, provider, had, owner), kept)


def _keep(store, response_id, provider, response, owner, kept=NOTHING_KEPT, strict=False):
    """Store a streamed response as `owner`'s, with its input where `kept` (a store.Kept)
    holds items; answer it as stored. Nothing is kept where store is None
    (store: false). A store that is down costs only the copy (logged), unless `strict`:
    then StoreError is raised."""
    try:
        response = contract_response(response, response_id, provider)
    except BadGateway as exc:
        log.warning("streamed response %s at %s was not stored: %s", response_id, provider, exc)
        return response
    return _record(store, response_id, provider, response, owner, kept, strict)


def _record(store, response_id, provider, response, owner, kept=NOTHING_KEPT, strict=False):
    """_keep() for a response already in the contract's shape (contract_response): a
    marshmallow load is the costliest step of a short stream's start and end."""
    if store is None:
        return response
    try:
        entry = store.record(response_id, provider, response, owner=stored_as(owner))
        if kept.items is not None:
            store.keep_input(response_id, kept.items, kept.previous, kept.conversation)
        return entry.body
    except StoreError as exc:
        log.warning("streamed response %s at %s was not stored: %s", response_id, provider, exc)
        if strict:
            raise
        return response


def _ended(store, response, kept):
    """Append a streamed response that has ended to its conversation, if it is a turn of
    one (conversations.py); answer it. A store that is down costs the turn (logged)."""
    if store is not None:
        try:
            conversations.turn_ended(store, response["id"], response, kept)
        except StoreError as exc:
            log.warning("streamed response %s was not added to conversation %s: %s",
                        response.get("id"), kept.conversation, exc)
    return response


def _store_error(sequence, consequence):
    """The event that ends a stream the store failed, saying what follows for the client."""
    return {"type": "error", "sequence_number": sequence, "param": None,
            "code": "store_unavailable",
            "message": f"the response store could not be reached; {consequence}"}


def _id_of(response):
    response_id = response.get("id") if isinstance(response, dict) else None
    return response_id if isinstance(response_id, str) and response_id else None
