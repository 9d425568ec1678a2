"""Responses API streaming events, written from successive Responses.

A client that streams a create expects the Responses API's event sequence:
response.created, then per output item output_item.added (and for a message
content_part.added), then deltas (output_text.delta, or
function_call_arguments.delta for a tool call), then each item's .done events,
and last response.completed, .incomplete or .failed. Where no provider sends
those events (Chat Completions, or a background response the gateway runs),
EventWriter writes them from the Response as it grows: each update() is
compared with the last and yields what changed, as the events that say so.
"""

import copy

# The API has no event for a cancelled response: it ended before it finished, so incomplete
# (the Response it carries says cancelled).
FINAL_EVENT = {"completed": "response.completed", "incomplete": "response.incomplete",
               "failed": "response.failed", "cancelled": "response.incomplete"}
ENDINGS = frozenset(FINAL_EVENT.values())  # the events that end a stream


class EventWriter:
    """Turns the Responses of one generation, as it grows, into streaming events."""

    def __init__(self):
        self.sequence = 0
        self.sent = []  # output items as the client has them so far

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

    def update(self, response):
        """The events for what the Response gained since the last update."""
        for index, item in enumerate(response.get("output") or []):
            if index == len(self.sent):
                yield from self._added(index, item)
            yield from self._grown(index, item)

    def finish(self, response):
        """The closing events: every item done, then the Response as it ended."""
        yield from self.update(response)
        for index, item in enumerate(self.sent):
            yield from self._done(index, item)
        kind = FINAL_EVENT.get(response.get("status"), "response.completed")
        yield self.event(kind, response=response)

    def error(self, code, message):
        """The event that ends a stream broken off upstream."""
        return self.event("error", code=code, message=message, param=None)

    def _added(self, index, item):
        skeleton = {**item, "status": "in_progress"}
        if item.get("type") == "message":
            skeleton["content"] = []
        elif item.get("type") == "function_call":
            skeleton["arguments"] = ""
        self.sent.append(copy.deepcopy(skeleton))
        yield self.event("response.output_item.added", output_index=index, item=skeleton)

    def _grown(self, index, item):
        mine = self.sent[index]
        if item.get("type") == "function_call":
            arguments, sent = item.get("arguments") or "", mine["arguments"]
            if len(arguments) > len(sent):
                mine["arguments"] = arguments
                yield self.event("response.function_call_arguments.delta", item_id=item.get("id"),
                                 output_index=index, delta=arguments[len(sent):])
            return
        for part_index, part in enumerate(item.get("content") or []):
            parts = mine.setdefault("content", [])
            if part_index == len(parts):
                parts.append({**part, "text": ""})
                yield self.event("response.content_part.added", item_id=item.get("id"),
                                 output_index=index, content_index=part_index,
                                 part={**part, "text": ""})
            text, sent = part.get("text") or "", parts[part_index]["text"]
            if len(text) > len(sent):
                parts[part_index]["text"] = text
                yield self.event("response.output_text.delta", item_id=item.get("id"),
                                 output_index=index, content_index=part_index,
                                 delta=text[len(sent):], logprobs=[])

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
        yield self.event("response.output_item.done", output_index=index,
                         item={**item, "status": "completed"})
