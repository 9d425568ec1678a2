"""Each response is seen only by the gateway key that made it: for any other key, retrieve
and cancel answer exactly as for an id nobody holds, with no provider call."""

import hashlib
import json
import time

import pytest

from owners import PREFIX, Owner
from gateway_process import free_port
from support import (
    GATEWAY_KEY, NATIVE, OTHER_GATEWAY_KEY, RETRIEVE, assert_envelope, auth, cancel_url,
    create_url, retrieve_url, upstream_response,
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


def test_the_store_keeps_a_keyed_digest_of_the_key_never_the_key(make_client, upstream,
                                                                 tmp_path):
    """Keyed with a secret kept apart from the database (GATEWAY_SECRET unset): the
    unkeyed digest of earlier releases, which anyone can compute, is not in the file."""
    client = make_client()
    native_create(client, upstream, "resp_d")

    entry = client.application.extensions["gateway"].store.get("resp_d")

    secret = (tmp_path / "store.sqlite3.secret").read_bytes()
    assert entry.owner == Owner.of(GATEWAY_KEY, [secret]).id
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("store.sqlite3*") if p.suffix != ".secret")
    unkeyed = hashlib.sha256(PREFIX + GATEWAY_KEY.encode()).hexdigest()
    assert entry.owner.encode() in raw
    assert GATEWAY_KEY.encode() not in raw and unkeyed.encode() not in raw and secret not in raw


@pytest.mark.parametrize("env", [{"RESPONSE_SCOPE": "shared"}, {"GATEWAY_AUTH": "disabled"}])
def test_a_deployment_may_share_responses_among_its_keys(make_client, upstream, env):
    client = make_client(**env)
    native_create(client, upstream, "resp_s")
    upstream.post(cancel_url("openai", "resp_s"), json=upstream_response("resp_s"))

    resp = client.post("/v1/responses/resp_s/cancel", headers=THEIRS)

    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled"


# A streamed create is its maker's from its first event, whatever kind of stream it is.

STREAM_KINDS = {  # kind: (provider, what the create adds)
    "passed-through-kept-by-the-provider": ("openai", {}),
    "passed-through-kept-by-none": ("groq", {}),
    "translated": ("anthropic", {}),
    "a-gateway-run-followed": ("anthropic", {"background": True}),
}


@pytest.fixture
def stream_client(make_client, streamer):
    """openai, groq and anthropic all at the streaming fake, which keeps what it streams
    at /v1/responses as OpenAI does."""
    return make_client(**{f"{name.upper()}_BASE_URL": streamer.base_url
                          for name in ("openai", "groq", "anthropic")})


def sse_events(chunks):
    """The (name, data) of each server-sent event in `chunks`, as they come."""
    for chunk in chunks:
        for block in chunk.decode().split("\n\n"):
            lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "data" in lines:
                yield lines.get("event"), json.loads(lines["data"])


def open_stream(client, kind, key, words=60):
    """Start a streamed create and read it up to its first event; (its id, the rest)."""
    provider, extra = STREAM_KINDS[kind]
    resp = client.post("/v1/responses", headers=MINE, buffered=False, json={
        "model": f"{provider}/words-{words}-20", "input": key, "stream": True, **extra})
    assert resp.status_code == 200
    events = sse_events(resp.response)
    name, first = next(events)
    assert name == "response.created"
    return first["response"]["id"], events


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_another_key_mid_stream_gets_nothing_and_claims_nothing(stream_client, streamer, kind):
    response_id, rest = open_stream(stream_client, kind, f"mid-{kind}")
    calls = len(streamer.calls)

    peek = stream_client.get(f"/v1/responses/{response_id}", headers=THEIRS)
    chained = stream_client.post("/v1/responses", headers=THEIRS, json={
        "model": f"{STREAM_KINDS[kind][0]}/words-2-0", "input": f"chain-{kind}",
        "previous_response_id": response_id})
    mine = stream_client.get(f"/v1/responses/{response_id}", headers=MINE)

    assert_envelope(peek, 404, "not_found_error")
    assert_envelope(chained, 400, "invalid_request_error", "previous_response_id",
                    "previous_response_not_found")
    assert chained.get_json()["error"]["message"] == \
        f"Previous response with id '{response_id}' not found."
    assert streamer.streams_for(f"chain-{kind}") == []
    assert mine.status_code == 200 and mine.get_json()["status"] in ("queued", "in_progress")
    assert len(streamer.calls) - calls == (1 if kind.endswith("by-the-provider") else 0)  # A's
    names = [name for name, _ in rest]  # the stream goes on to its end, A's throughout
    assert names[-1] == "response.completed"
    assert stream_client.get(f"/v1/responses/{response_id}", headers=MINE).get_json()[
        "status"] == "completed"
    assert_envelope(stream_client.get(f"/v1/responses/{response_id}", headers=THEIRS), 404,
                    "not_found_error")


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_an_items_id_is_the_same_from_its_added_event_to_the_stored_response(stream_client,
                                                                            kind):
    response_id, rest = open_stream(stream_client, kind, f"ids-{kind}", words=5)
    events = list(rest)

    added = [data["item"]["id"] for name, data in events if name == "response.output_item.added"]
    done = [data["item"]["id"] for name, data in events if name == "response.output_item.done"]
    deltas = {data["item_id"] for name, data in events if name == "response.output_text.delta"}
    final = events[-1][1]["response"]
    stored = stream_client.get(f"/v1/responses/{response_id}", headers=MINE).get_json()

    assert added and all(added)
    assert added == done == [item["id"] for item in final["output"]] == \
        [item["id"] for item in stored["output"]]
    assert deltas == set(added)


@pytest.mark.parametrize("kind", ["passed-through-kept-by-the-provider", "translated"])
def test_store_down_a_streamed_create_is_withdrawn_or_goes_on_where_nobody_could_reach_it(
        make_client, streamer, kind):
    """At a provider that keeps it for whoever asks, the stream stops with an error event
    and the response is withdrawn there; where the provider keeps nothing, it streams on."""
    client = make_client(STORE_URL=f"redis://127.0.0.1:{free_port()}/0", **{
        f"{name.upper()}_BASE_URL": streamer.base_url for name in ("openai", "anthropic")})
    provider, _ = STREAM_KINDS[kind]

    resp = client.post("/v1/responses", headers=MINE, json={
        "model": f"{provider}/words-30-10", "input": f"down-{kind}", "stream": True})

    events = list(sse_events([resp.get_data()]))
    if provider == "anthropic":
        assert events[-1][0] == "response.completed"
        return
    assert [name for name, _ in events] == ["error"]  # nothing of a response not kept
    assert events[-1][1]["code"] == "store_unavailable"
    upstream = streamer.wait_for(f"down-{kind}", lambda s: s.client_left, seconds=2)
    assert not upstream.finished and upstream.response_id not in streamer.kept
    assert [method for method, path in streamer.calls if upstream.response_id in path] == [
        "POST", "DELETE"]  # cancelled, then deleted


# Owner ids are keyed with the gateway's secret; older ids still reach their own keys.

OLD_SECRET, NEW_SECRET = "old-secret-0123456789", "new-secret-0123456789"


def stored_under(client, response_id, owner_id):
    """Put a response in the client's store as an earlier gateway would have left it."""
    store = client.application.extensions["gateway"].store
    store.record(response_id, "groq", upstream_response(response_id, status="completed"),
                 owner=owner_id)


def test_a_key_sees_what_it_made_under_an_older_secret_or_an_older_release(make_client):
    client = make_client(GATEWAY_SECRET=f"{NEW_SECRET},{OLD_SECRET}")
    unkeyed = hashlib.sha256(PREFIX + GATEWAY_KEY.encode()).hexdigest()  # before secrets
    stored_under(client, "resp_old_secret", Owner.of(GATEWAY_KEY, [OLD_SECRET.encode()]).id)
    stored_under(client, "resp_old_release", unkeyed)

    for response_id in ("resp_old_secret", "resp_old_release"):
        assert client.get(f"/v1/responses/{response_id}", headers=MINE).status_code == 200
        assert_envelope(client.get(f"/v1/responses/{response_id}", headers=THEIRS), 404,
                        "not_found_error")
    assert Owner.of(GATEWAY_KEY, [NEW_SECRET.encode()]).id == Owner.of(
        GATEWAY_KEY, [NEW_SECRET.encode(), OLD_SECRET.encode()]).id  # new ones: the first


def test_a_secret_dropped_from_the_list_hides_what_was_made_under_it_from_everyone(make_client):
    """Rotation without keeping the old secret fails closed: those responses are 404 to
    every key, never another key's."""
    client = make_client(GATEWAY_SECRET=NEW_SECRET)
    stored_under(client, "resp_rotated", Owner.of(GATEWAY_KEY, [OLD_SECRET.encode()]).id)

    for key in (MINE, THEIRS):
        assert_envelope(client.get("/v1/responses/resp_rotated", headers=key), 404,
                        "not_found_error")


def test_a_sqlite_store_from_the_release_before_keeps_working_after_the_upgrade(tmp_path):
    """Its entries carry the unkeyed digest; after the upgrade the key still sees them,
    and its new ones are keyed with the secret the store now keeps beside the file."""
    from app import create_app
    from support import ENV

    url = f"sqlite:///{tmp_path}/kept.sqlite3"
    first = create_app({**ENV, "STORE_URL": url}).test_client()
    stored_under(first, "resp_before", hashlib.sha256(PREFIX + GATEWAY_KEY.encode()).hexdigest())

    again = create_app({**ENV, "STORE_URL": url}).test_client()

    assert again.get("/v1/responses/resp_before", headers=MINE).status_code == 200
    assert_envelope(again.get("/v1/responses/resp_before", headers=THEIRS), 404,
                    "not_found_error")
    secret = (tmp_path / "kept.sqlite3.secret").read_bytes()
    owners = again.application.extensions["gateway"].owners
    assert Owner.of(GATEWAY_KEY, [secret]) in owners.values()  # new ones: keyed


@pytest.mark.parametrize("value", ["short", f"{NEW_SECRET},tiny"])
def test_a_secret_too_short_to_key_anything_stops_the_start(make_client, value):
    from config import ConfigError

    with pytest.raises(ConfigError, match="GATEWAY_SECRET"):
        make_client(GATEWAY_SECRET=value)


def test_redis_owner_ids_are_keyed_with_gateway_secret_and_unkeyed_without_it_says_so(
        make_client, upstream, redis_url, caplog):
    import redis

    raw = redis.Redis.from_url(redis_url)
    unkeyed = hashlib.sha256(PREFIX + GATEWAY_KEY.encode()).hexdigest()

    keyed = make_client(STORE_URL=redis_url, GATEWAY_SECRET=NEW_SECRET)
    native_create(keyed, upstream, "resp_redis_keyed")
    assert raw.hget("gateway:response:resp_redis_keyed", "owner").decode() == \
        Owner.of(GATEWAY_KEY, [NEW_SECRET.encode()]).id != unkeyed

    with caplog.at_level("WARNING"):
        bare = make_client(STORE_URL=redis_url)
    assert "GATEWAY_SECRET is not set" in caplog.text  # the one warning at start
    native_create(bare, upstream, "resp_redis_bare")
    assert raw.hget("gateway:response:resp_redis_bare", "owner").decode() == unkeyed


# Nothing tells another key an id exists.

def test_a_foreign_and_an_unknown_id_are_counted_alike(client, upstream):
    from test_metrics import delta, scrape

    native_create(client, upstream, "resp_counted")
    for name in RETRIEVE:
        upstream.get(retrieve_url(name, "resp_nobodys"), status=404)
    before = scrape(client)

    foreign = client.get("/v1/responses/resp_counted", headers=THEIRS)
    unknown = client.get("/v1/responses/resp_nobodys", headers=THEIRS)

    after = scrape(client)
    assert foreign.status_code == unknown.status_code == 404
    assert delta(before, after, "gateway_requests_total", status="404", provider="",
                 route="/v1/responses/<string(minlength=0):response_id>") == 2


def test_a_foreign_and_an_unknown_previous_id_get_the_same_answer(client, upstream):
    native_create(client, upstream, "resp_prev")
    upstream.post(create_url("openai"), status=400, json={"error": {
        "message": "Previous response with id 'resp_prev_x' not found.",
        "type": "invalid_request_error", "param": "previous_response_id",
        "code": "previous_response_not_found"}})

    answers = [client.post("/v1/responses", headers=THEIRS, json={
        "model": "openai/m", "input": "hi", "previous_response_id": previous})
        for previous in ("resp_prev", "resp_prev_x")]  # another key's; one only openai knows

    foreign, unknown = (a.get_json()["error"] for a in answers)
    assert foreign == {**unknown, "message": unknown["message"].replace("resp_prev_x", "resp_prev")}
    assert foreign["message"] == "Previous response with id 'resp_prev' not found."


@pytest.fixture
def no_probing(make_client):
    return make_client(PROBE_UNKNOWN_IDS="off")


@pytest.mark.parametrize("method,path", [
    ("get", "/v1/responses/{}"), ("post", "/v1/responses/{}/cancel"),
    ("delete", "/v1/responses/{}"), ("get", "/v1/responses/{}/input_items"),
    ("get", "/v1/responses/{}?provider=openai"),
])
def test_with_probing_off_an_unknown_id_is_answered_as_a_foreign_one_with_no_call(
        no_probing, upstream, method, path):
    native_create(no_probing, upstream, "resp_theirs", headers=THEIRS)
    calls = len(upstream.calls)

    unknown = getattr(no_probing, method)(path.format("resp_unknown"), headers=MINE)
    foreign = getattr(no_probing, method)(path.format("resp_theirs"), headers=MINE)

    assert len(upstream.calls) == calls  # `upstream` also fails the test on any call
    assert unknown.status_code == foreign.status_code == 404
    assert unknown.get_json()["error"] == {**foreign.get_json()["error"], "message": foreign.get_json()[
        "error"]["message"].replace("resp_theirs", "resp_unknown")}


def test_with_probing_off_an_unknown_previous_id_is_not_forwarded(no_probing, upstream):
    resp = no_probing.post("/v1/responses", headers=MINE, json={
        "model": "openai/m", "input": "hi", "previous_response_id": "resp_elsewhere"})

    assert_envelope(resp, 400, "invalid_request_error", "previous_response_id",
                    "previous_response_not_found")
    assert len(upstream.calls) == 0  # the answer was the gateway's own, at once


def test_probing_is_a_setting_with_two_values(make_client):
    from config import ConfigError

    with pytest.raises(ConfigError, match="PROBE_UNKNOWN_IDS"):
        make_client(PROBE_UNKNOWN_IDS="sometimes")
