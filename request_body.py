"""A request's JSON body, read and parsed within bounds, so no body can hurt a worker.

Three bounds, each an envelope when passed: the body's size (MAX_CONTENT_LENGTH,
a 413, whether it is declared or chunked), the time it takes to arrive
(BODY_TIMEOUT, a 408: a client that stops sending mid-body is dropped), and its
shape (MAX_BODY_VALUES values, MAX_NESTING levels deep, a 400). The shape is
checked before the body is parsed: one 16 MiB body of five million empty objects
would hold a worker's CPU for seconds and take gigabytes, and eight million numbers
take two seconds to parse and encode again for the provider. A body
refused for size or time is not read further: the connection stops reading
(gunicorn would otherwise drain what is left of it) and closes after the answer.

A body over a MiB costs its worker about six times its size while it is read,
parsed and encoded again for the provider, so a worker holds at most
BODIES_IN_FLIGHT bytes of such bodies at once: the next waits, its bytes still in
the client's socket, and gets a 503 if none are given back within BODY_TIMEOUT.
"""

import os
import socket
import threading
import time

from flask import g, request

from envelope import ApiError, invalid
from providers.upstream import NestedTooDeep, strict_json

MAX_NESTING = 128  # levels of objects and arrays; JSON schemas in tools nest a dozen
READ_SIZE = 64 * 1024
# A body past this many bytes takes a parse or an encoding of a quarter second at the
# worst: a worker yields to its other requests (gevent) around it, one stall at a time.
LARGE = 1024 * 1024


def json_object(limits):
    """The request body as a JSON object within `limits` (Settings), or the envelope
    that says why not."""
    data = read(limits.max_content_length, limits.body_timeout, limits.bodies_in_flight)
    containers = check_size(data, limits.max_body_values)
    if len(data) > LARGE:
        time.sleep(0)  # let the worker's other requests run: counting and parsing hold it
    try:
        body = strict_json(data)
    except NestedTooDeep:
        raise too_deep() from None
    except ValueError:  # UnicodeDecodeError included
        raise invalid("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    if containers > MAX_NESTING:  # fewer cannot nest that deep
        check_depth(body)
    if len(data) > LARGE:
        time.sleep(0)  # and again before the body is encoded for the provider
    return body


def read(limit, seconds, in_flight):
    """The whole body, at most `limit` bytes, within `seconds` of starting to read it; a
    large one once its worker holds fewer than `in_flight` bytes of large bodies."""
    refuse_declared(limit)
    stream, sock = request.environ["wsgi.input"], request.environ.get("gunicorn.socket")
    declared = request.content_length
    if declared is not None and declared > LARGE:
        hold(declared, in_flight, seconds)
    deadline = time.monotonic() + seconds  # a wait for a share is not the client's time
    chunks, size = [], 0
    previous = sock.gettimeout() if sock is not None else None
    try:
        while True:
            if sock is not None:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                chunk = stream.read(min(READ_SIZE, limit + 1 - size))
            except OSError:  # socket.timeout included
                chunk = None
            if chunk is None or time.monotonic() > deadline:
                raise stop_reading(408, f"the request body did not arrive within {seconds:g}s")
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise stop_reading(413, f"request body is over {limit} bytes")
            if size > LARGE and "body_held" not in g:  # chunked: its size is not known yet
                waited = time.monotonic()
                hold(limit, in_flight, seconds)
                deadline += time.monotonic() - waited
            chunks.append(chunk)
    finally:
        if sock is not None:
            sock.settimeout(previous)


def refuse_declared(limit):
    """Refuse a declared body over the limit before reading any of it (a before_request
    hook too, for routes that never read their body)."""
    if request.content_length is not None and request.content_length > limit:
        raise stop_reading(413, f"request body is over {limit} bytes")


def hold(size, in_flight, seconds):
    """Hold `size` bytes of this worker's BODIES_IN_FLIGHT for this request (given back
    when it ends: give_back), waiting up to `seconds`; else the 503 that says so."""
    if "body_held" in g:  # read once already: what it holds stays held, not twice
        return
    if not BODIES.take(size, in_flight, seconds):
        raise stop_reading(503, "the gateway holds as many large request bodies as it can; "
                           "retry", type="provider_error", code="gateway_busy",
                           headers={"Retry-After": "1"})
    g.body_held = size


def give_back(exc=None):
    """Give back what hold() took for this request (a teardown_request function)."""
    size = g.pop("body_held", 0)
    if size:
        BODIES.give_back(size)


class Bodies:
    """The bytes of large bodies a worker holds; one body alone always fits."""

    def __init__(self):
        self.reset()
        os.register_at_fork(after_in_child=self.reset)  # each worker counts its own

    def reset(self):
        self.held, self._changed = 0, threading.Condition()

    def take(self, size, most, seconds):
        deadline = time.monotonic() + seconds
        with self._changed:
            while self.held and self.held + size > most:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            self.held += size
            return True

    def give_back(self, size):
        with self._changed:
            self.held -= size
            self._changed.notify_all()


BODIES = Bodies()


def stop_reading(status, message, type="invalid_request_error", **fields):
    """The envelope for a body refused part way: the connection reads no more of it, so
    the server neither waits for the rest nor drains it, and closes after the answer."""
    sock = request.environ.get("gunicorn.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass  # the client is gone already
    return ApiError(status, type, message, **fields)


def check_size(data, most):
    """Refuse a body of more than `most` JSON values, counted before parsing: counting its
    brackets and commas takes milliseconds; only a body over the bound by that count (code
    or prose in its strings) is counted again outside its strings. Returns the count of
    objects and arrays."""
    containers, values = count_shape(data)
    if values > most:
        containers, values = count_shape(outside_strings(data, most))
        if values > most:
            raise too_many_values(most)
    return containers


def count_shape(data):
    """Objects and arrays, and values: those plus the items and members they hold, as the
    commas between them (each count an upper bound; exact outside strings)."""
    containers = data.count(b"{") + data.count(b"[")
    return containers, containers + data.count(b",")


def outside_strings(data, most_values):
    """The body with its strings taken out. Once escaped backslashes and quotes are gone,
    every quote left opens or closes a string, so splitting at quotes finds them (JSON
    invalid there fails the parse at that point, and the count is exact up to it)."""
    plain = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    # A key or a value per string: more strings than twice the values are refused
    # before the split makes an object of each.
    if plain.count(b'"') > 4 * most_values + 2:
        raise too_many_values(most_values)
    return b"".join(plain.split(b'"')[::2])


def too_many_values(most):
    return invalid(f"the request body holds more than {most} JSON values")


def check_depth(value):
    """Refuse objects and arrays nested more than MAX_NESTING deep (the walk is bounded,
    as check_size bounded how many there are)."""
    level = [value]
    for _ in range(MAX_NESTING):
        level = [child for node in level
                 for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, (dict, list))]
        if not level:
            return
    raise too_deep()


def too_deep():
    return invalid(f"the request body nests objects and arrays more than {MAX_NESTING} deep")
