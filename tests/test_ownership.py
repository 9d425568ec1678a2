"""Each response is seen only by the gateway key that made it: for any other key, retrieve
and cancel answer exactly as for an id nobody holds, with no provider call."""

import time

import pytest

from config import owner_id
from support import (
    GATEWAY_KEY, NATIVE, OTHER_GATEWAY_KEY, RETRIEVE, auth, cancel_url, create_url,
    retrieve_url, upstream_response,
)

MINE, THEIRS = auth(GATEWAY_KEY), auth(OTHER_GATEWAY_KEY)


def native_create(client, upstream, response_id, headers=MINE):
    upstream.post(create_url("openai"), json=upstream_response(response_id, status="queued"))
    resp = client.post("/v1/responses", headers=headers,
                       json={"model": "openai/m", "background": True})
    assert resp.status_code == 200
    return response_id


def unknown_id_answer(client, upstream, method, response_id):
    """What a key gets for an id nobody holds: every capable provider probed, each a 404."""
    names = RETRIEVE if method == "get" else NATIVE
    url = retrieve_url if method == "get" else cancel_url
    for name in names:
        upstream.add(method.upper(), url(name, response_id), status=404)
    path = f"/v1/responses/{response_id}" + ("" if method == "get" else "/cancel")
    return getattr(client, method)(path, headers=THEIRS)


@pytest.mark.parametrize("method", ["get", "post"], ids=["retrieve", "cancel"])
def test_another_keys_response_answers_as_an_id_nobody_holds(client, upstream, method):
    theirs = unknown_id_answer(client, upstream, method, "resp_x")
    calls = len(upstream.calls)
    native_create(client, upstream, "resp_x2")

    path = "/v1/responses/resp_x2" + ("" if method == "get" else "/cancel")
    resp = getattr(client, method)(path, headers=THEIRS)

    assert len(upstream.calls) == calls + 1  # the create only: nothing asked of a provider
    assert resp.status_code == theirs.status_code == 404
    assert resp.get_json() == {"error": {
        **theirs.get_json()["error"],
        "message": theirs.get_json()["error"]["message"].replace("resp_x", "resp_x2")}}


@pytest.mark.parametrize("method", ["get", "post"], ids=["retrieve", "cancel"])
def test_a_provider_hint_does_not_reach_another_keys_response(client, upstream, method):
    native_create(client, upstream, "resp_h")

    path = "/v1/responses/resp_h" + ("" if method == "get" else "/cancel")
    resp = getattr(client, method)(path, query_string={"provider": "openai"}, headers=THEIRS)

    assert resp.status_code == 404 and len(upstream.calls) == 1
    assert resp.get_json()["error"]["message"] == "response 'resp_h' was not found at openai"


def test_the_key_that_made_it_retrieves_and_cancels_it(client, upstream):
    native_create(client, upstream, "resp_m")
    upstream.get(retrieve_url("openai", "resp_m"), json=upstream_response("resp_m",
                                                                          status="in_progress"))
    upstream.post(cancel_url("openai", "resp_m"), json=upstream_response("resp_m"))

    assert client.get("/v1/responses/resp_m", headers=MINE).get_json()["status"] == "in_progress"
    assert client.post("/v1/responses/resp_m/cancel", headers=MINE).get_json()[
        "status"] == "cancelled"


def test_another_key_cannot_cancel_a_gateway_run_which_goes_on(streaming_client, streamer):
    created = streaming_client.post("/v1/responses", headers=MINE, json={
        "model": "groq/words-100-20", "input": "own-run", "background": True}).get_json()
    streamer.wait_for("own-run", lambda s: s.sent >= 2)

    theirs = streaming_client.post(f"/v1/responses/{created['id']}/cancel", headers=THEIRS)
    peek = streaming_client.get(f"/v1/responses/{created['id']}", headers=THEIRS)

    assert theirs.status_code == peek.status_code == 404
    assert theirs.get_json()["error"]["type"] == "not_found_error"
    time.sleep(0.3)
    assert not streamer.streams_for("own-run")[0].client_left  # still generating
    mine = streaming_client.post(f"/v1/responses/{created['id']}/cancel", headers=MINE)
    assert mine.get_json()["status"] == "cancelled"
    assert streamer.wait_for("own-run", lambda s: s.client_left, seconds=2)


def test_a_streamed_response_is_its_makers_too(streaming_client):
    resp = streaming_client.post("/v1/responses", headers=MINE, json={
        "model": "anthropic/words-3-0", "input": "own-stream", "stream": True})
    final = resp.get_data(as_text=True).rsplit('"response": ', 1)[1]
    response_id = final.split('"id": "', 1)[1].split('"', 1)[0]

    assert streaming_client.get(f"/v1/responses/{response_id}", headers=MINE).status_code == 200
    assert streaming_client.get(f"/v1/responses/{response_id}", headers=THEIRS).status_code == 404


def test_the_store_keeps_a_digest_of_the_key_never_the_key(make_client, upstream, tmp_path):
    client = make_client()
    native_create(client, upstream, "resp_d")

    entry = client.application.extensions["gateway"].store.get("resp_d")

    assert entry.owner == owner_id(GATEWAY_KEY) and GATEWAY_KEY not in entry.owner
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("store.sqlite3*"))
    assert GATEWAY_KEY.encode() not in raw and entry.owner.encode() in raw


@pytest.mark.parametrize("env", [{"RESPONSE_SCOPE": "shared"}, {"GATEWAY_AUTH": "disabled"}])
def test_a_deployment_may_share_responses_among_its_keys(make_client, upstream, env):
    client = make_client(**env)
    native_create(client, upstream, "resp_s")
    upstream.post(cancel_url("openai", "resp_s"), json=upstream_response("resp_s"))

    resp = client.post("/v1/responses/resp_s/cancel", headers=THEIRS)

    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled"
