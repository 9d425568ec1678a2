"""A generation streamed from a provider, read into the Response so far.

A provider's stream operation (PROVIDERS[name].stream) checks and translates
the create body at once and returns a Generation, which sends nothing until it
is opened or iterated. Iterating it yields the Response so far each time its
output grows, then the final Response (completed, incomplete, or failed as the
provider says); events() yields the provider's own events instead, for a
client that streams. A failure on the way raises a ProviderError.
close(), from any thread, shuts the connection: the read under way returns,
the iteration ends, and the provider sees its client go away, so it stops
generating (and billing).

Two readers turn server-sent events into Responses: ChatReader for Chat
Completions chunks, ResponsesReader for Responses API events.
"""

import copy
import time

import requests
import urllib3

from providers.errors import BadGateway, GatewayTimeout
from providers.translate import output_items, response, status_for
from providers.upstream import MAX_BODY_BYTES, abort, error_fields, open_stream, strict_json

READ_SIZE = 64 * 1024
FINAL_EVENTS = {"response.completed": "completed", "response.incomplete": "incomplete",
                "response.failed": "failed"}


class Generation:
    """One streamed generation at a provider; see the module's docstring."""

    def __init__(self, upstream, path, payload, reader, method="POST"):
        self.upstream, self.path, self.payload, self.reader = upstream, path, payload, reader
        self.method = method  # GET: a stream asked for again, with no body
        self.response_id = reader.response_id
        self._resp = None
        self._closed = False

    def queued(self):
        """The Response as it stands before the generation starts."""
        return self.reader.response("queued")

    def open(self):
        """Send the request now, if not yet sent; raise the ProviderError of a refusal."""
        if self._resp is None:
            self._resp = open_stream(self.upstream, self.path, self.payload, self.method)
        return self

    def events(self):
        """(event, whether the output grew) for each upstream event as it arrives, the
        reader having taken it in; raises a ProviderError if the stream fails."""
        resp = self.open()._resp
        try:
            if self._closed:  # closed while the request was on its way
                return
            try:
                for data in sse_data(self.upstream, resp):  # to the end: the connection is reused
                    if not self.reader.done:
                        yield data, self.reader.feed(data)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                if self._closed:
                    return  # our own close() broke the read off
                if not self.reader.done:  # past the end, a broken connection costs nothing
                    raise _broken(self.upstream, exc) from exc
        finally:
            resp.close()

    def __iter__(self):
        for _, grew in self.events():
            if grew:
                yield self.reader.response("in_progress")
        if not self._closed:
            yield self.reader.final()

    def close(self):
        """Stop the generation: shut the upstream connection (safe from any thread)."""
        self._closed = True
        if self._resp is not None:
            abort(self._resp)


def _broken(upstream, exc):
    """The ProviderError for a stream whose connection failed before it ended."""
    name = upstream.name
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return GatewayTimeout(name, f"{name} sent nothing for {upstream.read_timeout:g}s")
    return BadGateway(name, f"{name} broke off its stream")


def sse_data(upstream, resp):
    """The data of each server-sent event, as it arrives ('[DONE]' as is, else JSON)."""
    name = upstream.name
    pending, data = b"", []
    while chunk := resp.raw.read1(READ_SIZE):
        pending += chunk
        if len(pending) > MAX_BODY_BYTES:
            raise BadGateway(name, f"{name} sent an event over {MAX_BODY_BYTES // 2**20} MiB")
        *lines, pending = pending.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
            elif not line and data:  # a blank line ends an event
                yield _parse(upstream, b"\n".join(data))
                data = []
            # event:, id:, retry: and ':' comments (keep-alives) carry nothing we need
    if pending.startswith(b"data:"):  # the last line, with no newline after it
        data.append(pending.rstrip(b"\r")[5:].removeprefix(b" "))
    if data:
        yield _parse(upstream, b"\n".join(data))


def _parse(upstream, data):
    if data == b"[DONE]":
        return "[DONE]"
    try:
        event = strict_json(data)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise BadGateway(upstream.name, f"{upstream.name} sent an event that is no JSON object")
    return event


class Reader:
    """What readers share: the Response they build, and a provider's error event."""

    def __init__(self, upstream, response_id, model):
        self.upstream, self.response_id, self.model = upstream, response_id, model
        self.created_at = int(time.time())
        self.done = False

    def failure(self, payload):
        """The error a provider's error event reports, as a ProviderError to raise."""
        name = self.upstream.name
        message, _, code = error_fields(self.upstream, payload)
        detail = message or code or "no reason given"
        return BadGateway(name, f"{name} failed the generation: {detail}")


class ChatReader(Reader):
    """Chat Completions chunks: text deltas, tool-call deltas, a finish reason, usage."""

    def __init__(self, upstream, response_id, model):
        super().__init__(upstream, response_id, model)
        self.text, self.calls = [], {}  # calls: index -> [id, name, [argument pieces]]
        self.finish_reason, self.usage = None, None

    def feed(self, chunk):
        """Take one chunk; whether the output grew."""
        if chunk == "[DONE]":
            self.done = True
            return False
        if chunk.get("error"):
            raise self.failure(chunk)
        self.model = chunk.get("model") or self.model
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            return False
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        grew = False
        if isinstance(delta.get("content"), str) and delta["content"]:
            self.text.append(delta["content"])
            grew = True
        for call in delta.get("tool_calls") or []:
            grew |= self._call_delta(call)
        return grew

    def _call_delta(self, call):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            return False
        entry = self.calls.setdefault(call.get("index", len(self.calls)), [None, None, []])
        entry[0] = call.get("id") or entry[0]
        entry[1] = function.get("name") or entry[1]
        if isinstance(function.get("arguments"), str):
            entry[2].append(function["arguments"])
        return True

    def response(self, status):
        calls = [(cid, name, "".join(args)) for cid, name, args in self.calls.values()]
        output = output_items(self.response_id, "".join(self.text), calls)
        return response(self.response_id, self.model, status, output, usage=self.usage,
                        created_at=self.created_at)

    def final(self):
        """The finished Response; raises if the stream ended before the model finished."""
        if self.finish_reason is None:
            name = self.upstream.name
            raise BadGateway(name, f"{name} ended its stream before the answer was finished")
        return self.response(status_for(self.finish_reason))


class ResponsesReader(Reader):
    """Responses API events: output items, their text and argument deltas, a final event."""

    def __init__(self, upstream, response_id, model):
        super().__init__(upstream, response_id, model)
        self.items = {}  # output_index -> output item so far
        self.last = None  # the Response the final event carried

    def feed(self, event):
        """Take one event; whether the output grew."""
        kind, index = event.get("type"), event.get("output_index")
        if kind == "error":
            raise self.failure({"error": event})
        if kind in FINAL_EVENTS and isinstance(event.get("response"), dict):
            self.last = {**event["response"], "status": FINAL_EVENTS[kind]}
            self.done = True
            return False
        if kind in ("response.output_item.added", "response.output_item.done"):
            if isinstance(event.get("item"), dict):
                self.items[index] = copy.deepcopy(event["item"])
                return True
        elif kind == "response.output_text.delta" and isinstance(event.get("delta"), str):
            item = self.items.setdefault(index, {"type": "message", "role": "assistant"})
            parts = item.setdefault("content", [])
            part_index = event.get("content_index", 0)
            while len(parts) <= part_index:
                parts.append({"type": "output_text", "text": "", "annotations": []})
            parts[part_index]["text"] = parts[part_index].get("text", "") + event["delta"]
            return True
        elif (kind == "response.function_call_arguments.delta"
              and isinstance(event.get("delta"), str)):
            item = self.items.setdefault(index, {"type": "function_call"})
            item["arguments"] = item.get("arguments", "") + event["delta"]
            return True
        return False

    def response(self, status):
        output = [self.items[i] for i in sorted(self.items, key=_order)]
        return response(self.response_id, self.model, status, output, created_at=self.created_at)

    def final(self):
        """The provider's final Response, under our id; raises if none came."""
        if self.last is None:
            name = self.upstream.name
            raise BadGateway(name, f"{name} ended its stream before the response was finished")
        last = self.last
        return response(self.response_id, last.get("model") or self.model, last["status"],
                        last.get("output"), usage=last.get("usage"), error=last.get("error"),
                        created_at=self.created_at)


def _order(index):
    return index if isinstance(index, int) else float("inf")
