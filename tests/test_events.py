"""Streaming events written from a growing Response, and the server-sent-event encoder."""

import threading
import time

from providers.events import EventWriter
from streams import sse


def message(text, item_id="msg_1"):
    return {"type": "message", "id": item_id, "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def call(arguments, call_id="call_1"):
    return {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id, "name": "f",
            "arguments": arguments, "status": "completed"}


def response(status, *output):
    return {"id": "resp_1", "object": "response", "status": status, "output": list(output)}


def test_text_deltas_then_every_done_event_in_order():
    writer = EventWriter()
    events = [*writer.start(response("in_progress")),
              *writer.update(response("in_progress", message("He"))),
              *writer.update(response("in_progress", message("Hello"))),
              *writer.update(response("in_progress", message("Hello"))),  # nothing new
              *writer.finish(response("completed", message("Hello!")))]

    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["delta"] for e in events if e["type"].endswith(".delta")] == ["He", "llo", "!"]
    added = events[2]["item"]
    assert (added["content"], added["status"]) == ([], "in_progress")  # filled by what follows
    assert events[7]["text"] == "Hello!" and events[-1]["response"]["status"] == "completed"
    assert events[4]["item_id"] == "msg_1" and events[4]["content_index"] == 0


def test_tool_call_argument_deltas_and_a_second_item():
    writer = EventWriter()
    events = [*writer.update(response("in_progress", call('{"a"'))),
              *writer.update(response("in_progress", call('{"a": 1}'), call("", "call_2"))),
              *writer.finish(response("incomplete", call('{"a": 1}'), call("{}", "call_2")))]

    kinds = [(e["type"], e.get("output_index")) for e in events]
    assert kinds == [
        ("response.output_item.added", 0), ("response.function_call_arguments.delta", 0),
        ("response.function_call_arguments.delta", 0), ("response.output_item.added", 1),
        ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.done", 0), ("response.output_item.done", 0),
        ("response.function_call_arguments.done", 1), ("response.output_item.done", 1),
        ("response.incomplete", None)]
    assert events[5]["arguments"] == '{"a": 1}' and events[5]["name"] == "f"


def test_a_cancelled_response_ends_as_incomplete_and_an_error_is_numbered():
    writer = EventWriter()

    [end] = writer.finish(response("cancelled"))
    error = writer.error("upstream_error", "broke off")

    assert (end["type"], end["response"]["status"]) == ("response.incomplete", "cancelled")
    assert error == {"type": "error", "sequence_number": 1, "code": "upstream_error",
                     "message": "broke off", "param": None}


def test_sse_encodes_events_and_keeps_a_silent_stream_alive():
    stopped = []

    def slow():
        yield {"type": "a", "n": 1}
        time.sleep(0.35)
        yield {"type": "b", "n": 2}

    chunks = list(sse(slow(), lambda: stopped.append(True), keepalive=0.1))

    assert chunks[0] == b'event: a\ndata: {"type": "a", "n": 1}\n\n'
    assert chunks[-1] == b'event: b\ndata: {"type": "b", "n": 2}\n\n'
    assert set(chunks[1:-1]) == {b": keep-alive\n\n"} and len(chunks[1:-1]) >= 2
    assert stopped == [True]


def test_closing_the_stream_stops_its_source_at_once():
    release = threading.Event()

    def endless():
        while not release.is_set():
            yield {"type": "x"}
            time.sleep(0.01)

    stream = sse(endless(), release.set, keepalive=1)
    next(stream)

    stream.close()  # what gunicorn does when the client has gone

    assert release.is_set()
