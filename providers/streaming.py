"""A generation streamed from a provider, read as it comes.

A provider's stream operation (PROVIDERS[name].stream) checks and translates
the create body at once and returns a Generation, which sends nothing until it
is opened or read. events() yields each of the provider's own events (for a
client that streams them as they are: its bytes, where they can go out as they
came) with what it changed in the output;
changes() yields only those changes, as unnumbered Responses API events
(providers/events.py numbers them); final() is then the Response as the
provider ended it (completed, incomplete, or failed), so_far() the Response in
progress. A failure on the way raises a ProviderError. close(), from any
thread, shuts the connection: the read under way returns, the reading ends,
and the provider sees its client go away, so it stops generating (and billing).

Two readers take in the server-sent events: ChatReader for Chat Completions
chunks, ResponsesReader for Responses API events. Each keeps every text as the
list of its deltas, so an event costs the same however long the stream grows.
"""

import copy
import time

import requests
import urllib3

from providers.errors import BadGateway, GatewayTimeout
from providers.events import Sent
from providers.translate import call_item, message_item, response, status_for
from providers.upstream import MAX_BODY_BYTES, abort, error_fields, open_stream, strict_json

READ_SIZE = 64 * 1024
FINAL_EVENTS = {"response.completed": "completed", "response.incomplete": "incomplete",
                "response.failed": "failed"}
# The events that grow an item, and the field that holds what they add.
DELTAS = {"response.content_part.added": "part", "response.output_text.delta": "delta",
          "response.function_call_arguments.delta": "delta"}


class Generation:
    """One streamed generation at a provider; see the module's docstring."""

    def __init__(self, upstream, path, payload, reader, method="POST"):
        self.upstream, self.path, self.payload, self.reader = upstream, path, payload, reader
        self.method = method  # GET: a stream asked for again, with no body
        self.response_id = reader.response_id
        self._resp = None
        self.closed = False

    def queued(self):
        """The Response as it stands before the generation starts."""
        return self.reader.response("queued")

    def so_far(self):
        """The Response as it stands now, in progress (built whole: not for every event)."""
        return self.reader.response("in_progress")

    def final(self):
        """The Response as the provider ended it; raises if the stream ended too early."""
        return self.reader.final()

    def open(self):
        """Send the request now, if not yet sent; raise the ProviderError of a refusal."""
        if self._resp is None:
            self._resp = open_stream(self.upstream, self.path, self.payload, self.method)
            self.payload = None  # sent: the input need not be held while the stream lasts
        return self

    def events(self):
        """(event, data, changes) for each upstream event as it arrives: the event, its
        bytes as sse_data() gives them, and what it changed in the output as unnumbered
        Responses events (the reader having taken it in). Raises a ProviderError if the
        stream fails."""
        resp = self.open()._resp
        try:
            if self.closed:  # closed while the request was on its way
                return
            try:
                for event, data in sse_data(self.upstream, resp):  # to the end: reused
                    if not self.reader.done:
                        yield event, data, self.reader.feed(event)
            except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                if self.closed:
                    return  # our own close() broke the read off
                if not self.reader.done:  # past the end, a broken connection costs nothing
                    raise _broken(self.upstream, exc) from exc
        finally:
            resp.close()

    def changes(self):
        """What each upstream event changed in the output, as a list of unnumbered
        Responses events, while there are any; then final() says how it ended."""
        for _, _, changes in self.events():
            if changes:
                yield changes

    def close(self):
        """Stop the generation: shut the upstream connection (safe from any thread)."""
        self.closed = True
        if self._resp is not None:
            abort(self._resp)


def _broken(upstream, exc):
    """The ProviderError for a stream whose connection failed before it ended."""
    name = upstream.name
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return GatewayTimeout(name, f"{name} sent nothing for {upstream.read_timeout:g}s")
    return BadGateway(name, f"{name} broke off its stream")


def sse_data(upstream, resp):
    """(event, data) for each server-sent event, as it arrives: its data parsed ('[DONE]'
    as is, else JSON), and its bytes where one line held a JSON object that can go out
    as it came (else None: several lines, or a carriage return inside)."""
    name = upstream.name
    pending, data = bytearray(), []
    while chunk := resp.raw.read1(READ_SIZE):
        pending += chunk
        if len(pending) > MAX_BODY_BYTES:
            raise BadGateway(name, f"{name} sent an event over {MAX_BODY_BYTES // 2**20} MiB")
        if b"\n" not in chunk:  # a line still arriving: nothing to split yet
            continue
        *lines, rest = pending.split(b"\n")
        pending = bytearray(rest)
        for line in lines:
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
            elif not line and data:  # a blank line ends an event
                yield _parse(upstream, data)
                data = []
            # event:, id:, retry: and ':' comments (keep-alives) carry nothing we need
    if pending.startswith(b"data:"):  # the last line, with no newline after it
        data.append(bytes(pending).rstrip(b"\r")[5:].removeprefix(b" "))
    if data:
        yield _parse(upstream, data)


def _parse(upstream, lines):
    data = lines[0] if len(lines) == 1 else b"\n".join(lines)
    if data == b"[DONE]":
        return "[DONE]", None
    try:
        event = strict_json(data)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise BadGateway(upstream.name, f"{upstream.name} sent an event that is no JSON object")
    # A carriage return ends a line for the client's parser too; a BOM or UTF-16 is no UTF-8.
    sendable = len(lines) == 1 and data[:1] == b"{" and b"\r" not in data
    return event, data if sendable else None


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
    """Chat Completions chunks: text deltas, tool-call deltas, a finish reason, usage.

    Output items are numbered in the order they first appear (the message when its
    first text comes, each tool call when it is first named), and each keeps its text
    as the list of its deltas, joined only when a whole Response is asked for.
    """

    def __init__(self, upstream, response_id, model, names=None):
        super().__init__(upstream, response_id, model)
        self.names = names  # a namespaced function's Chat name -> (namespace, name)
        self.output = []  # [kind, pieces, call fields] per output item, in order
        self.message = None  # the output index of the text message, once it has text
        self.calls = {}  # Chat's tool-call index -> output index
        self.finish_reason, self.usage = None, None

    def feed(self, chunk):
        """Take one chunk; what it changed, as unnumbered Responses events."""
        if chunk == "[DONE]":
            self.done = True
            return []
        if chunk.get("error"):
            raise self.failure(chunk)
        self.model = chunk.get("model") or self.model
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else {}
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            return []
        self.finish_reason = choice.get("finish_reason") or self.finish_reason
        changes = []
        if isinstance(delta.get("content"), str) and delta["content"]:
            changes += self._text(delta["content"])
        for call in delta.get("tool_calls") or []:
            changes += self._call_delta(call)
        return changes

    def _text(self, text):
        changes, item_id = [], message_item(self.response_id, "")["id"]
        if self.message is None:
            self.message = len(self.output)
            self.output.append(["message", [], None])
            skeleton = {**message_item(self.response_id, "", "in_progress"), "content": []}
            part = {"type": "output_text", "text": "", "annotations": []}
            changes += [
                {"type": "response.output_item.added", "output_index": self.message,
                 "item": skeleton},
                {"type": "response.content_part.added", "item_id": item_id,
                 "output_index": self.message, "content_index": 0, "part": part}]
        self.output[self.message][1].append(text)
        return changes + [{"type": "response.output_text.delta", "item_id": item_id,
                           "output_index": self.message, "content_index": 0, "delta": text,
                           "logprobs": []}]

    def _call_delta(self, call):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            return []
        changes, key = [], call.get("index", len(self.calls))
        if key not in self.calls:
            self.calls[key] = len(self.output)
            fields = {"call_id": call.get("id"), "name": function.get("name")}
            self.output.append(["function_call", [], fields])
            changes.append({"type": "response.output_item.added",
                            "output_index": self.calls[key],
                            "item": call_item(fields["call_id"], fields["name"], "",
                                              "in_progress", self.names)})
        index = self.calls[key]
        fields, pieces = self.output[index][2], self.output[index][1]
        fields["call_id"] = fields["call_id"] or call.get("id")
        fields["name"] = fields["name"] or function.get("name")
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            pieces.append(arguments)
            changes.append({"type": "response.function_call_arguments.delta",
                            "item_id": f"fc_{fields['call_id']}", "output_index": index,
                            "delta": arguments})
        return changes

    def response(self, status):
        output = [message_item(self.response_id, "".join(pieces)) if kind == "message"
                  else call_item(fields["call_id"], fields["name"], "".join(pieces),
                                 names=self.names)
                  for kind, pieces, fields in self.output]
        return response(self.response_id, self.model, status, output, usage=self.usage,
                        created_at=self.created_at)

    def final(self):
        """The finished Response; raises if the stream ended before the model finished."""
        if self.finish_reason is None:
            name = self.upstream.name
            raise BadGateway(name, f"{name} ended its stream before the answer was finished")
        return self.response(status_for(self.finish_reason))


class ResponsesReader(Reader):
    """Responses API events: output items, their text and argument deltas, a final event.

    Each item keeps its text as the list of its deltas, joined only when a whole
    Response is asked for.
    """

    def __init__(self, upstream, response_id, model):
        super().__init__(upstream, response_id, model)
        self.items = {}  # output_index -> Sent: the item so far
        self.last = None  # the Response the final event carried

    def feed(self, event):
        """Take one event; what it changed, as unnumbered Responses events."""
        kind, index = event.get("type"), event.get("output_index")
        if kind == "error":
            raise self.failure({"error": event})
        if kind in FINAL_EVENTS and isinstance(event.get("response"), dict):
            self.last = {**event["response"], "status": FINAL_EVENTS[kind]}
            self.done = True
            return []
        if kind == "response.output_item.added" and isinstance(event.get("item"), dict):
            self.items[index] = Sent(copy.deepcopy(event["item"]))
            return [_unnumbered(event)]
        if kind == "response.output_item.done" and isinstance(event.get("item"), dict):
            done = self.items[index] = Sent(copy.deepcopy(event["item"]))
            content = done.item.get("content")
            if isinstance(content, list):
                done.item["content"] = []
                for part_index, part in enumerate(content):
                    done.add_part(part_index, part if isinstance(part, dict) else {})
            if isinstance(done.item.get("arguments"), str):
                done.add_arguments(done.item["arguments"])
            return []  # the client's own .done events come at the end
        if kind not in DELTAS or not isinstance(event.get(DELTAS[kind]), (str, dict)):
            return []
        changes = [] if index in self.items else self._added(event)
        item = self.items[index]
        if kind == "response.content_part.added":
            item.add_part(event.get("content_index", 0), event["part"])
        elif kind == "response.output_text.delta":
            item.add_text(event.get("content_index", 0), event["delta"])
        else:
            item.add_arguments(event["delta"])
        return changes + [_unnumbered(event)]

    def _added(self, event):
        """The item an event refers to before any output_item.added: as the provider
        would have added it."""
        index, kind = event.get("output_index"), event["type"]
        calls = kind == "response.function_call_arguments.delta"
        item = {"type": "function_call", "arguments": ""} if calls else \
            {"type": "message", "role": "assistant", "content": []}
        if isinstance(event.get("item_id"), str):
            item["id"] = event["item_id"]
        item["status"] = "in_progress"
        self.items[index] = Sent(item)
        return [{"type": "response.output_item.added", "output_index": index,
                 "item": copy.deepcopy(item)}]

    def response(self, status):
        output = [self.items[i].whole(status=None) for i in sorted(self.items, key=_order)]
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


def _unnumbered(event):
    return {k: v for k, v in event.items() if k != "sequence_number"}


def _order(index):
    return index if isinstance(index, int) else float("inf")
