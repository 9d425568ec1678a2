"""What the store keeps, and who can read its files: store: false keeps nothing, a refused
create keeps nothing, and the SQLite files are their owner's only."""

import os
import stat
import time

import pytest

from support import RETRIEVE, assert_envelope, auth, create_url, retrieve_url, upstream_response

SECRET_TEXT = "the-words-nobody-may-keep"


def store_files(tmp_path):
    return sorted(tmp_path.glob("store.sqlite3*"))


def kept_anywhere(tmp_path, text):
    """Whether any of the store's files holds `text` (WAL and all)."""
    return any(text.encode() in path.read_bytes() for path in store_files(tmp_path))


@pytest.fixture
def stream_client(make_client, streamer):
    return make_client(**{f"{name.upper()}_BASE_URL": streamer.base_url
                          for name in ("openai", "groq", "anthropic")})


def sse_ids(text):
    return {line.split('"id": "', 1)[1].split('"', 1)[0]
            for line in text.splitlines() if line.startswith("data:") and '"response": {' in line}


@pytest.mark.parametrize("provider", ["openai", "groq", "anthropic"])
def test_a_streamed_create_with_store_false_keeps_nothing(stream_client, tmp_path, provider):
    resp = stream_client.post("/v1/responses", headers=auth(), json={
        "model": f"{provider}/words-3-0", "input": f"{SECRET_TEXT}-{provider}", "stream": True,
        "store": False})

    [response_id] = sse_ids(resp.get_data(as_text=True))
    store = stream_client.application.extensions["gateway"].store
    assert store.get(response_id) is None and store.input_items(response_id) is None
    assert not kept_anywhere(tmp_path, SECRET_TEXT) and not kept_anywhere(tmp_path, "w0 w1")
    # Not found afterwards: openai (the fake) was told store: false and kept nothing either.
    assert_envelope(stream_client.get(f"/v1/responses/{response_id}?provider=openai",
                                      headers=auth()), 404, "not_found_error")


@pytest.mark.parametrize("provider", ["openai", "groq"])
def test_a_create_with_store_false_keeps_nothing_and_is_not_found_afterwards(client, upstream,
                                                                             tmp_path, provider):
    upstream.post(create_url(provider), json=upstream_response(
        "resp_unkept", status="completed", output=[{"type": "message", "content": [
            {"type": "output_text", "text": "an answer nobody keeps"}]}]))

    created = client.post("/v1/responses", headers=auth(), json={
        "model": f"{provider}/m", "input": SECRET_TEXT, "store": False})

    assert created.status_code == 200 and created.get_json()["id"] == "resp_unkept"
    assert not kept_anywhere(tmp_path, SECRET_TEXT)
    assert not kept_anywhere(tmp_path, "an answer nobody keeps")
    for name in RETRIEVE:  # nothing says where it is: probed, and nobody has it
        upstream.get(retrieve_url(name, "resp_unkept"), status=404)
    assert_envelope(client.get("/v1/responses/resp_unkept", headers=auth()), 404,
                    "not_found_error")


@pytest.mark.parametrize("provider", ["openai", "groq", "anthropic"])
def test_background_with_store_false_is_refused_as_openai_refuses_it(client, upstream,
                                                                     provider):
    resp = client.post("/v1/responses", headers=auth(), json={
        "model": f"{provider}/m", "input": "x", "background": True, "store": False})

    error = assert_envelope(resp, 400, "invalid_request_error", param="store")
    assert "background" in error["message"]


def test_a_gateway_run_the_provider_refuses_keeps_no_input(stream_client, streamer, tmp_path):
    big = SECRET_TEXT * 600  # 15 KiB
    created = stream_client.post("/v1/responses", headers=auth(), json={
        "model": "groq/refuse-1-0", "input": big, "background": True}).get_json()

    deadline = time.monotonic() + 5
    while (entry := stream_client.get(f"/v1/responses/{created['id']}",
                                      headers=auth()).get_json())["status"] != "failed":
        assert time.monotonic() < deadline, entry
        time.sleep(0.02)

    assert entry["error"]["code"] == "invalid_request"  # its failure is kept, to be read
    store = stream_client.application.extensions["gateway"].store
    assert store.input_items(created["id"]) is None and not kept_anywhere(tmp_path, SECRET_TEXT)
    listed = stream_client.get(f"/v1/responses/{created['id']}/input_items", headers=auth())
    assert listed.get_json()["data"] == []


@pytest.mark.parametrize("stream", [False, True])
def test_a_create_the_provider_refuses_keeps_nothing(client, upstream, tmp_path, stream):
    upstream.post(create_url("groq"), status=400, json={"error": {"message": "too long"}})

    resp = client.post("/v1/responses", headers=auth(), json={
        "model": "groq/m", "input": SECRET_TEXT, "stream": stream})

    assert_envelope(resp, 400, "invalid_request_error")
    assert not kept_anywhere(tmp_path, SECRET_TEXT)


def test_the_sqlite_stores_files_are_readable_by_their_owner_only(stream_client, tmp_path):
    stream_client.post("/v1/responses", headers=auth(), json={  # writes: WAL, lock and all
        "model": "groq/words-2-0", "input": "modes", "background": True})

    found = {path.name: stat.S_IMODE(path.stat().st_mode) for path in store_files(tmp_path)}
    assert {"store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm", "store.sqlite3.lock",
            "store.sqlite3.secret"} <= set(found)
    assert found == {name: 0o600 for name in found}


def test_files_an_earlier_release_left_open_to_others_are_narrowed_at_start(make_client,
                                                                             tmp_path):
    make_client().get("/healthz")  # the files, as a release before this one made them
    for path in store_files(tmp_path):
        os.chmod(path, 0o644)

    make_client()

    assert {stat.S_IMODE(p.stat().st_mode) for p in store_files(tmp_path)} == {0o600}
