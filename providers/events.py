"""Responses API streaming events: numbered, noted as sent, and the events that end a stream.

A client that streams a create expects the Responses API's event sequence:
response.created, then per output item output_item.added (and for a message
content_part.added), then deltas (output_text.delta, or
function_call_arguments.delta for a tool call), then each item's .done events,
and last response.completed, .incomplete or .failed. Where no provider sends
those events as the client needs them (Chat Completions, or a background
response the gateway runs), the readers of providers/streaming.py say what each
upstream chunk changed, as such events unnumbered, and EventWriter numbers them
(apply). It notes what the client has been sent, each text as the list of its
deltas, so an event costs the same at the end of a long stream as at its start;
finish() compares the final Response with that once, sends what is missing,
then every .done event and the ending.
"""

import copy

# The API has no event for a cancelled response: it ended before it finished, so incomplete
# (the Response it carries says cancelled).
FINAL_EVENT = {"completed": "response.completed", "incomplete": "response.incomplete",
               "failed": "response.failed", "cancelled": "response.incomplete"}
ENDINGS = frozenset(FINAL_EVENT.values())  # the events that end a stream


class Sent:
    """One output item as the client has it: the item as added, its content parts, and
    each part's text and a call's arguments as the deltas sent (joined only at the end)."""

    __slots__ = ("item", "parts", "texts", "lengths", "arguments", "arguments_length")

    def __init__(self, item):
        self.item = item
        self.parts, self.texts, self.lengths = [], [], []
        self.arguments, self.arguments_length = [], 0

    def add_part(self, index, part):
        while len(self.parts) <= index:
            self.parts.append({"type": "output_text", "text": "", "annotations": []})
            self.texts.append([])
            self.lengths.append(0)
        self.parts[index] = {**part, "text": ""}
        self.add_text(index, part.get("text") or "")

    def add_text(self, index, delta):
        if index >= len(self.parts):
            self.add_part(index, {"type": "output_text", "annotations": []})
        self.texts[index].append(delta)
        self.lengths[index] += len(delta)

    def add_arguments(self, delta):
        self.arguments.append(delta)
        self.arguments_length += len(delta)

    def whole(self, status="completed"):
        """The item with all its text joined (once: for the .done events, or a whole
        Response); `status` None keeps the item's own."""
        item = {**self.item, "status": status} if status else dict(self.item)
        if self.parts:
            item["content"] = [{**part, "text": "".join(text)}
                               for part, text in zip(self.parts, self.texts)]
        if item.get("type") == "function_call":
            item["arguments"] = "".join(self.arguments)
        return item


class EventWriter:
    """Numbers the streaming events of one generation and writes those that end it."""

    def __init__(self):
        self.sequence = 0
        self.sent = {}  # output_index -> Sent

    def event(self, kind, **fields):
        """One event, numbered in order."""
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def start(self, response):
        """The events that open the stream: the Response as created."""
        yield self.event("response.created", response=response)
        if response.get("status") == "in_progress":
            yield self.event("response.in_progress", response=response)

    def apply(self, changes):
        """Number the events a reader made of one upstream chunk, noting what they send."""
        for change in changes:
            self._note(change)
            event = {**change, "sequence_number": self.sequence}
            self.sequence += 1
            yield event

    def update(self, response):
        """The events for what a Response has that the client was not sent yet (compared
        whole: for the end of a stream, or a source that has only whole Responses)."""
        for index, item in enumerate(response.get("output") or []):
            if index not in self.sent:
                yield from self._added(index, item)
            yield from self._grown(index, item)

    def finish(self, response):
        """The closing events: what the final Response adds, every item done, then the
        Response as it ended."""
        yield from self.update(response)
        for index in sorted(self.sent):
            yield from self._done(index, self.sent[index].whole())
        kind = FINAL_EVENT.get(response.get("status"), "response.completed")
        yield self.event(kind, response=response)

    def error(self, code, message):
        """The event that ends a stream broken off upstream."""
        return self.event("error", code=code, message=message, param=None)

    def _note(self, change):
        kind, index = change["type"], change.get("output_index")
        if kind == "response.output_item.added":
            self.sent[index] = Sent(copy.deepcopy(change["item"]))
            return
        sent = self.sent.get(index)
        if sent is None:  # a reader always adds an item first
            return
        if kind == "response.content_part.added":
            sent.add_part(change.get("content_index", 0), change.get("part") or {})
        elif kind == "response.output_text.delta":
            sent.add_text(change.get("content_index", 0), change["delta"])
        elif kind == "response.function_call_arguments.delta":
            sent.add_arguments(change["delta"])

    def _added(self, index, item):
        skeleton = {**item, "status": "in_progress"}
        if item.get("type") == "message":
            skeleton["content"] = []
        elif item.get("type") == "function_call":
            skeleton["arguments"] = ""
        self.sent[index] = Sent(copy.deepcopy(skeleton))
        yield self.event("response.output_item.added", output_index=index, item=skeleton)

    def _grown(self, index, item):
        sent, item_id = self.sent[index], item.get("id")
        if item.get("type") == "function_call":
            arguments = item.get("arguments") or ""
            if len(arguments) > sent.arguments_length:
                delta = arguments[sent.arguments_length:]
                sent.add_arguments(delta)
                yield self.event("response.function_call_arguments.delta", item_id=item_id,
                                 output_index=index, delta=delta)
            return
        for part_index, part in enumerate(item.get("content") or []):
            if part_index >= len(sent.parts):
                sent.add_part(part_index, {**part, "text": ""})
                yield self.event("response.content_part.added", item_id=item_id,
                                 output_index=index, content_index=part_index,
                                 part={**part, "text": ""})
            text = part.get("text") or ""
            if len(text) > sent.lengths[part_index]:
                delta = text[sent.lengths[part_index]:]
                sent.add_text(part_index, delta)
                yield self.event("response.output_text.delta", item_id=item_id,
                                 output_index=index, content_index=part_index,
                                 delta=delta, logprobs=[])

    def _done(self, index, item):
        item_id = item.get("id")
        if item.get("type") == "function_call":
            yield self.event("response.function_call_arguments.done", item_id=item_id,
                             output_index=index, name=item.get("name"),
                             arguments=item["arguments"])
        for part_index, part in enumerate(item.get("content") or []):
            yield self.event("response.output_text.done", item_id=item_id, output_index=index,
                             content_index=part_index, text=part["text"], logprobs=[])
            yield self.event("response.content_part.done", item_id=item_id, output_index=index,
                             content_index=part_index, part=part)
        yield self.event("response.output_item.done", output_index=index, item=item)
