"""POST /v1/responses with stream: true: through the app, then through real gunicorn with the
official SDK, against a provider on 127.0.0.1 that streams slowly and records whether its
client went away."""

import json
import time

import openai
import pytest
import requests

from gateway_process import run_gateway
from support import GATEWAY_KEY, assert_envelope, auth, chat_url, create_url

TEXT = " ".join(f"w{i}" for i in range(5))


@pytest.fixture
def gateway(streaming_client):
    return streaming_client


def events_of(text):
    """The (event name, data) pairs of a server-sent-event stream."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n") if not line.startswith(":"))
        if lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


def stream(gateway, model, key, **fields):
    resp = gateway.post("/v1/responses", headers=auth(), json={
        "model": model, "input": key, "stream": True, **fields})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "text/event-stream"
    return events_of(resp.get_data(as_text=True))


def test_a_chat_only_provider_streams_translated_events_and_stores_the_end(gateway, streamer):
    events = stream(gateway, "anthropic/words-5-0", "sc-chat")

    names = [name for name, _ in events]
    assert names[:2] == ["response.created", "response.in_progress"]
    assert names[-1] == "response.completed" and "[DONE]" not in names
    assert all(name == data["type"] for name, data in events)
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert "".join(d["delta"] for n, d in events if n == "response.output_text.delta") == TEXT
    final = events[-1][1]["response"]
    assert (final["provider"], final["usage"]["output_tokens"]) == ("anthropic", 5)
    stored = gateway.get(f"/v1/responses/{final['id']}", headers=auth()).get_json()
    assert stored == final  # retrieve finds it afterwards


def test_a_responses_api_provider_streams_its_own_events_with_provider_stamped(gateway,
                                                                             streamer):
    events = stream(gateway, "groq/words-5-0", "sc-groq")
    [upstream] = streamer.streams_for("sc-groq")

    names = [name for name, _ in events]
    assert names[0] == "response.created" and names[-1] == "response.completed"
    assert names.count("response.output_text.delta") == 5
    for _, data in events:
        if "response" in data:
            assert (data["response"]["id"], data["response"]["provider"]) == (
                upstream.response_id, "groq")  # the provider's id, kept
    stored = gateway.get(f"/v1/responses/{upstream.response_id}", headers=auth()).get_json()
    assert (stored["status"], stored["provider"]) == ("completed", "groq")


def test_a_passed_through_event_goes_out_as_the_provider_sent_it(client, upstream):
    """Its bytes, as they came (no re-encoding); only an event that carries the Response
    changes (provider stamped); a type with a line break cannot add lines of its own."""
    created = {"id": "resp_bytes", "object": "response", "status": "in_progress",
               "model": "m", "output": []}
    delta = '{"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1",' \
            '"output_index":0,"content_index":0,"delta":"h\u00e9 \\" ","x-new":[1.50]}'
    odd = '{"type":"x\\ndata: {}","sequence_number":2}'
    done = {**created, "status": "completed"}
    first = json.dumps({"type": "response.created", "sequence_number": 0, "response": created})
    last = json.dumps({"type": "response.completed", "sequence_number": 3, "response": done})
    body = (f"event: response.created\ndata: {first}\n\n"
            f"event: response.output_text.delta\ndata:{delta}\n\n"
            f"data: {odd}\n\ndata: {last}\n\n")
    upstream.post(create_url("groq"), content_type="text/event-stream", body=body)

    resp = client.post("/v1/responses", headers=auth(), json={
        "model": "groq/m", "input": "x", "stream": True})

    blocks = resp.get_data().split(b"\n\n")
    assert blocks[1] == b"event: response.output_text.delta\ndata: " + delta.encode()
    assert blocks[2] == b"data: " + odd.encode()  # no event: line for a type that breaks one
    first, last = (json.loads(b.split(b"data: ", 1)[1]) for b in (blocks[0], blocks[3]))
    assert (first["response"]["provider"], last["response"]["provider"]) == ("groq", "groq")
    assert blocks[0].startswith(b"event: response.created\ndata: ")


@pytest.mark.parametrize("model", ["anthropic/cut-3-0", "groq/cut-3-0", "gemini/fail-3-0",
                                   "groq/fail-3-0"])
def test_an_upstream_that_breaks_mid_stream_ends_with_an_error_event(make_client, streamer,
                                                                     model):
    gateway = make_client(**{f"{model.split('/')[0].upper()}_BASE_URL": streamer.base_url})

    events = stream(gateway, model, f"sc-{model}")

    name, error = events[-1]
    assert name == "error" and error["code"] == "upstream_error" and error["message"]
    assert error["sequence_number"] == events[-2][1]["sequence_number"] + 1
    assert sum(n == "response.output_text.delta" for n, _ in events) == 3  # what came first


def test_a_refusal_before_the_first_byte_is_the_usual_envelope(client, upstream):
    upstream.post(chat_url("zai"), status=429, json={"error": {"message": "slow down"}})

    resp = client.post("/v1/responses", headers=auth(), json={
        "model": "zai/m", "input": "x", "stream": True})

    assert_envelope(resp, 429, "rate_limit_error")


def test_a_field_that_cannot_be_translated_is_400_before_streaming(gateway):
    resp = gateway.post("/v1/responses", headers=auth(), json={
        "model": "anthropic/m", "input": "x", "stream": True, "truncation": "auto"})

    assert_envelope(resp, 400, "invalid_request_error", param="truncation")


def test_a_background_stream_follows_the_gateway_run(gateway, streamer):
    events = stream(gateway, "groq/words-5-20", "sc-bg", background=True)

    names = [name for name, _ in events]
    assert names[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert names[-1] == "response.completed"
    assert "".join(d["delta"] for n, d in events if n == "response.output_text.delta") == TEXT
    final = events[-1][1]["response"]
    assert gateway.get(f"/v1/responses/{final['id']}", headers=auth()).get_json() == final
    assert "background" not in streamer.streams_for("sc-bg")[0].body  # the gateway runs it


# Through gunicorn, with the official SDK.

@pytest.fixture(scope="module")
def served(streamer, tmp_path_factory):
    with run_gateway(tmp_path_factory.mktemp("streaming"), GATEWAY_API_KEYS=GATEWAY_KEY,
                     ANTHROPIC_API_KEY="sk-ant-s", ANTHROPIC_BASE_URL=streamer.base_url,
                     GROQ_API_KEY="gsk-s", GROQ_BASE_URL=streamer.base_url) as gw:
        yield gw


def sdk(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)


@pytest.mark.parametrize("provider", ["anthropic", "groq"])
def test_the_sdk_stream_gives_the_full_text_and_a_completed_response(served, provider):
    events = list(sdk(served).responses.create(model=f"{provider}/words-20-5",
                                               input=f"sdk-{provider}", stream=True))

    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == " ".join(f"w{i}" for i in range(20))
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage.output_tokens == 20
    with sdk(served).responses.stream(model=f"{provider}/words-3-0", input="mgr") as manager:
        final = manager.get_final_response()  # the SDK's own accumulator accepts the sequence
    assert final.output_text == "w0 w1 w2"


@pytest.mark.parametrize("provider", ["anthropic", "groq"])
def test_a_client_that_leaves_mid_stream_closes_the_upstream(served, streamer, provider):
    key = f"leave-{provider}"
    with requests.post(f"{served.url}/v1/responses", stream=True, timeout=10,
                       headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                       json={"model": f"{provider}/words-1000-20", "input": key,
                             "stream": True}) as resp:
        lines = resp.iter_lines()
        deltas = 0
        while deltas < 3:
            deltas += b"output_text.delta" in next(lines)
    left_at = time.monotonic()

    stream = streamer.wait_for(key, lambda s: s.client_left, seconds=2)
    assert stream.gone_at - left_at < 1 and not stream.finished


def test_200_deltas_arrive_as_200_deltas_the_first_before_the_upstream_ends(served, streamer):
    events = sdk(served).responses.create(model="anthropic/words-200-10", input="sc-200",
                                          stream=True)
    deltas, first_at_upstream_end = 0, None
    for event in events:
        if event.type == "response.output_text.delta":
            if deltas == 0:
                first_at_upstream_end = streamer.streams_for("sc-200")[0].finished
            deltas += 1

    assert deltas == 200
    assert first_at_upstream_end is False  # no buffering of the whole answer


def test_a_background_stream_outlives_its_client(served, streamer):
    with requests.post(f"{served.url}/v1/responses", stream=True, timeout=10,
                       headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                       json={"model": "groq/words-60-20", "input": "bg-leave", "stream": True,
                             "background": True}) as resp:
        created = json.loads(next(line for line in resp.iter_lines()
                                  if line.startswith(b"data:"))[5:])
    response_id = created["response"]["id"]

    deadline = time.monotonic() + 10
    while (status := sdk(served).responses.retrieve(response_id).status) != "completed":
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    stream = streamer.wait_for("bg-leave", lambda s: s.finished)
    assert not stream.client_left


@pytest.mark.parametrize("model", ["groq/cut-3-5", "anthropic/fail-3-5"])
def test_through_gunicorn_a_broken_upstream_ends_the_sdk_stream_with_an_error(served, model):
    events = list(sdk(served).responses.create(model=model, input=f"sdk-{model}", stream=True))

    assert events[-1].type == "error" and events[-1].code == "upstream_error"
    assert sum(e.type == "response.output_text.delta" for e in events) == 3
