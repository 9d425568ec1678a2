"""GET /v1/responses/{id}?stream=true[&starting_after=N]: a background response's events
after N, then the run live to its end; from the gateway's record of its own runs (the
same numbers on every read), forwarded where the provider runs it."""

import json
import time

import pytest

from support import (
    OTHER_GATEWAY_KEY, assert_envelope, auth, create_url, retrieve_url, sse_data,
    upstream_response,
)


def resume(client, response_id, key=None, **query):
    resp = client.get(f"/v1/responses/{response_id}", headers=auth(*([key] if key else [])),
                      query_string={"stream": "true", **query})
    return resp


def run_to_its_end(client, model, key):
    """A background create streamed to its end: the events as the first client saw them."""
    resp = client.post("/v1/responses", headers=auth(), json={
        "model": model, "input": key, "stream": True, "background": True})
    assert resp.status_code == 200
    return sse_data(resp.get_data(as_text=True))


@pytest.mark.parametrize("provider", ["anthropic", "groq"])
def test_every_read_gets_the_same_events_under_the_same_numbers(streaming_client, provider):
    first = run_to_its_end(streaming_client, f"{provider}/words-6-10", f"rs-{provider}")
    response_id = first[0]["response"]["id"]

    whole = sse_data(resume(streaming_client, response_id).get_data(as_text=True))
    tail = sse_data(resume(streaming_client, response_id, starting_after=4).get_data(
        as_text=True))

    assert whole == first  # after the run ended: its whole record
    assert tail == first[5:] and tail[0]["sequence_number"] == 5
    assert [e["sequence_number"] for e in whole] == list(range(len(whole)))
    assert whole[-1]["type"] == "response.completed"


def test_a_resume_follows_a_running_run_live_to_its_end(streaming_client, streamer):
    created = streaming_client.post("/v1/responses", headers=auth(), json={
        "model": "anthropic/words-30-20", "input": "rs-live", "background": True}).get_json()
    streamer.wait_for("rs-live", lambda s: s.sent >= 5)

    events = sse_data(resume(streaming_client, created["id"], starting_after=2).get_data(
        as_text=True))

    assert events[0]["sequence_number"] == 3 and events[-1]["type"] == "response.completed"
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text.endswith("w29")
    assert streamer.wait_for("rs-live", lambda s: s.finished)


def test_a_cancelled_run_ends_its_record_as_incomplete_cancelled(streaming_client, streamer):
    created = streaming_client.post("/v1/responses", headers=auth(), json={
        "model": "anthropic/words-300-20", "input": "rs-cancel", "background": True}).get_json()
    streamer.wait_for("rs-cancel", lambda s: s.sent >= 3)
    streaming_client.post(f"/v1/responses/{created['id']}/cancel", headers=auth())

    events = sse_data(resume(streaming_client, created["id"]).get_data(as_text=True))

    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["status"] == "cancelled"


def test_another_runner_reads_the_record_from_the_store(streaming_client):
    """Another process (here: a second app on the same store) reads the events the first
    process logged, under the same numbers."""
    first = run_to_its_end(streaming_client, "anthropic/words-4-0", "rs-elsewhere")
    response_id = first[0]["response"]["id"]
    runner = streaming_client.application.extensions["gateway"].runner
    deadline = time.monotonic() + 5
    while len(runner.store.events(response_id, -1)) < len(first):  # logged within a round
        assert time.monotonic() < deadline
        time.sleep(0.05)
    from background import Runner

    elsewhere = Runner(runner.store, threads=1, lease=30, watch_every=None)

    import threading
    assert list(elsewhere.replay(response_id, 1, threading.Event())) == first[2:]


def test_a_native_background_response_is_streamed_again_by_its_provider(client, upstream):
    upstream.post(create_url("openai"), json=upstream_response("resp_bg", status="queued"))
    client.post("/v1/responses", headers=auth(), json={"model": "openai/m", "background": True})
    body = "".join(
        f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in [
            {"type": "response.output_text.delta", "sequence_number": 8, "output_index": 0,
             "content_index": 0, "delta": "late"},
            {"type": "response.completed", "sequence_number": 9, "response": upstream_response(
                "resp_bg", status="completed")}])
    upstream.get(f"{retrieve_url('openai', 'resp_bg')}?stream=true&starting_after=7",
                 body=body, content_type="text/event-stream")

    events = sse_data(resume(client, "resp_bg", starting_after=7).get_data(as_text=True))

    assert [e["sequence_number"] for e in events] == [8, 9]
    assert events[-1]["response"]["provider"] == "openai"  # stamped, as passed through
    assert upstream.calls[-1].request.headers["Authorization"] == "Bearer sk-openai-secret-0001"


def test_a_response_that_ran_in_the_foreground_is_400(client, upstream):
    upstream.post(create_url("groq"), json=upstream_response("resp_fg", status="completed"))
    client.post("/v1/responses", headers=auth(), json={"model": "groq/m"})

    assert_envelope(resume(client, "resp_fg"), 400, "invalid_request_error", param="stream")


@pytest.mark.parametrize("query,param", [({"stream": "yes"}, "stream"),
                                         ({"starting_after": "ten"}, "starting_after")])
def test_a_bad_stream_query_is_400(client, query, param):
    resp = client.get("/v1/responses/resp_q", headers=auth(),
                      query_string={"stream": "true", **query})

    assert_envelope(resp, 400, "invalid_request_error", param=param)


def test_another_key_cannot_stream_a_run_again(streaming_client):
    first = run_to_its_end(streaming_client, "anthropic/words-2-0", "rs-private")

    theirs = resume(streaming_client, first[0]["response"]["id"], key=OTHER_GATEWAY_KEY)

    assert_envelope(theirs, 404, "not_found_error")  # as for an id nobody holds
