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

Each source stores the final Response, so retrieve and cancel find it later.
An upstream failure after the first byte ends the stream with an `error`
event. When the client goes away, gunicorn closes sse(), which closes the
source at once: the upstream connection is shut, so the provider stops
generating. Nothing here knows Flask.
"""

import json
import logging
import queue
import threading

from background import run_error
from providers.errors import BadGateway, ProviderError
from providers.events import EventWriter
from schemas import contract_response
from store import StoreError

log = logging.getLogger("gateway.streams")

KEEPALIVE = 15.0  # seconds of provider silence before a comment keeps routers from timing out
END = object()


def sse(source, stop, keepalive=KEEPALIVE):
    """The stream's bytes: each event of `source`, and a comment whenever none comes for
    `keepalive` seconds. `stop()` ends the source (from this thread) when the stream ends."""
    events = queue.SimpleQueue()

    def pump():  # reads the provider, so this thread can speak while the provider is silent
        try:
            for event in source:
                events.put(event)
        except Exception:
            log.exception("stream source failed")
        finally:
            events.put(END)

    threading.Thread(target=pump, name="stream-pump", daemon=True).start()
    try:
        while True:
            try:
                event = events.get(timeout=keepalive)
            except queue.Empty:
                yield b": keep-alive\n\n"
                continue
            if event is END:
                return
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
    finally:  # the end, or the client went away (GeneratorExit)
        stop()


def passthrough(generation, provider, store, owner=None, kept=(None, None)):
    """A Responses API provider's events as they come, `provider` stamped where a Response
    appears; its final Response is stored under the provider's own id."""
    sequence = -1
    try:
        for event, _ in generation.events():
            sequence = event.get("sequence_number", sequence + 1)
            if isinstance(event.get("response"), dict):
                event = {**event, "response": {**event["response"], "provider": provider}}
            yield event
        generation.reader.final()  # raises if the stream ended before its final event
    except ProviderError as exc:
        error = run_error(exc)
        yield {"type": "error", "sequence_number": sequence + 1, "param": None, **error}
        return
    last = generation.reader.last
    if isinstance(last.get("id"), str) and last["id"]:
        _store(store, last["id"], provider, last, owner, kept)


def translated(generation, provider, store, owner=None, kept=(None, None)):
    """A Chat-only provider's chunks as Responses events; the final Response is stored."""
    writer, response_id = EventWriter(), generation.response_id
    yield from writer.start(contract_response({**generation.queued(), "status": "in_progress"},
                                              response_id, provider))
    try:
        for changes in generation.changes():
            yield from writer.apply(changes)
        if generation.closed:
            return  # the client went away
        final = contract_response(generation.final(), response_id, provider)
    except ProviderError as exc:
        failed = {**(generation.reader.response("failed")), "error": run_error(exc)}
        _store(store, response_id, provider, failed, owner, kept)
        yield writer.error(**run_error(exc))
        return
    yield from writer.finish(_store(store, response_id, provider, final, owner, kept))


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
        yield {"type": "error", "sequence_number": after + 1, "param": None,
               "code": "store_unavailable",
               "message": "the response store could not be reached; retrieve the response later"}


def _store(store, response_id, provider, response, owner, kept):
    """Store a streamed response's final state, as `owner`'s, and what to keep of its
    input: (items, previous id), items None where its provider keeps them; a store that is
    down costs only the copy."""
    items, previous = kept
    try:
        if items is not None:
            store.keep_input(response_id, items, previous)
        return store.record(response_id, provider,
                            contract_response(response, response_id, provider), owner=owner).body
    except (StoreError, BadGateway) as exc:
        log.warning("streamed response %s at %s was not stored: %s", response_id, provider, exc)
        return response
