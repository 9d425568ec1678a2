"""Retrieve and cancel with the response store: straight to the provider that holds an
id, never a status that goes backwards, repeat cancels answered from the store, and a
store that is down costs only the shortcut."""

import logging

import pytest

from gateway_process import free_port
from support import (
    RETRIEVE, assert_envelope, auth, cancel_url, create_url, retrieve_url, upstream_response,
)


@pytest.fixture
def retrieve(client):
    def get(response_id, provider=None):
        query = {"provider": provider} if provider is not None else {}
        return client.get(f"/v1/responses/{response_id}", query_string=query, headers=auth())

    return get


@pytest.fixture
def created(client, upstream):
    """Create a background response at a provider through the gateway; return its id."""

    def create(provider, response_id="resp_s", status="queued", background=True):
        upstream.post(create_url(provider), json=upstream_response(response_id, status=status))
        resp = client.post("/v1/responses", json={"model": f"{provider}/m",
                                                  "background": background}, headers=auth())
        assert resp.status_code == 200
        return response_id

    return create


def test_retrieve_of_a_stored_id_asks_only_its_provider(created, retrieve, upstream):
    rid = created("vllm")
    upstream.get(retrieve_url("vllm", rid), json=upstream_response(rid, status="in_progress"))

    resp = retrieve(rid)

    assert (resp.get_json()["provider"], resp.get_json()["status"]) == ("vllm", "in_progress")
    assert [c.request.method for c in upstream.calls] == ["POST", "GET"]


def test_retrieve_of_an_unknown_id_probes_in_order_then_remembers(retrieve, cancel, upstream):
    for provider in RETRIEVE[:2]:
        upstream.get(retrieve_url(provider, "r"), status=404)
    upstream.get(retrieve_url("xai", "r"), json=upstream_response("r", status="completed"))

    assert retrieve("r").get_json()["provider"] == "xai"
    assert [c.request.url for c in upstream.calls] == [
        retrieve_url(p, "r") for p in ["openai", "azure", "xai"]]

    upstream.get(retrieve_url("xai", "r"), json=upstream_response("r", status="completed"))
    assert retrieve("r").status_code == 200
    assert len(upstream.calls) == 4  # learned: straight to xai the second time


def test_retrieve_when_no_provider_holds_the_id_is_404(retrieve, upstream):
    for provider in RETRIEVE:
        upstream.get(retrieve_url(provider, "r"), status=404)

    error = assert_envelope(retrieve("r"), 404, "not_found_error")
    assert all(provider in error["message"] for provider in RETRIEVE)


@pytest.mark.parametrize("provider", ["groq", "anthropic"])
def test_retrieve_hint_without_native_retrieve_is_501(retrieve, upstream, provider):
    assert_envelope(retrieve("r", provider=provider), 501, "invalid_request_error",
                    code="unsupported_response_operation")


def test_retrieve_rejects_a_bad_id_and_an_unknown_hint(retrieve, upstream):
    assert_envelope(retrieve(".."), 400, "invalid_request_error", param="id")
    assert_envelope(retrieve("r", provider="nope"), 400, "invalid_request_error", param="provider")


def test_a_response_from_a_stateless_provider_is_answered_from_the_store(created, retrieve,
                                                                        upstream):
    rid = created("groq", status="completed", background=False)

    resp = retrieve(rid)

    assert (resp.get_json()["provider"], resp.get_json()["status"]) == ("groq", "completed")
    assert len(upstream.calls) == 1  # the create; groq keeps nothing to ask


def test_cancel_of_a_response_at_a_provider_without_native_cancel_is_501(created, cancel,
                                                                         upstream):
    rid = created("groq", status="completed", background=False)  # not run by the gateway

    assert_envelope(cancel(rid), 501, "invalid_request_error",
                    code="unsupported_response_operation")
    assert len(upstream.calls) == 1  # no probing of the native providers either


def test_repeat_cancel_is_answered_from_the_store(cancel, upstream):
    upstream.post(cancel_url("openai", "r"), json=upstream_response("r", usage={"total_tokens": 9}))
    first = cancel("r", provider="openai")

    second, third = cancel("r", provider="openai"), cancel("r")

    assert first.status_code == second.status_code == third.status_code == 200
    assert first.get_json() == second.get_json() == third.get_json()
    assert first.get_json()["usage"]["total_tokens"] == 9
    assert len(upstream.calls) == 1


def test_a_hint_overrides_the_store(created, cancel, upstream):
    rid = created("vllm")
    upstream.post(cancel_url("azure", rid), status=404)

    assert_envelope(cancel(rid, provider="azure"), 404, "not_found_error")
    assert upstream.calls[-1].request.url == cancel_url("azure", rid)


@pytest.mark.parametrize("late", ["in_progress", "completed"])
def test_a_late_answer_cannot_undo_a_cancel(created, cancel, retrieve, upstream, late):
    rid = created("openai")
    upstream.post(cancel_url("openai", rid), json=upstream_response(rid, status="cancelled"))
    cancel(rid)
    # The provider's replica lags (in_progress), or the job finished as it was cancelled.
    upstream.get(retrieve_url("openai", rid), json=upstream_response(rid, status=late))

    assert retrieve(rid).get_json()["status"] == "cancelled"


def test_a_refresh_moves_the_status_forward(created, retrieve, cancel, upstream):
    rid = created("openai")
    upstream.get(retrieve_url("openai", rid),
                 json=upstream_response(rid, status="completed", output=[{"type": "message"}]))

    assert retrieve(rid).get_json()["status"] == "completed"
    # Only a stored cancel is answered from the store: for the rest the provider decides.
    upstream.post(cancel_url("openai", rid), status=400, json={"error": {
        "message": "Cannot cancel a completed response."}})
    error = assert_envelope(cancel(rid), 400, "invalid_request_error")
    assert "completed" in error["message"]


# The store is down: a Redis that nobody listens for.

@pytest.fixture
def storeless(make_client):
    return make_client(STORE_URL=f"redis://127.0.0.1:{free_port()}/0")


@pytest.fixture
def shared_storeless(make_client):
    """Every key sees every response: with the store down, ids are routed as before."""
    return make_client(STORE_URL=f"redis://127.0.0.1:{free_port()}/0", RESPONSE_SCOPE="shared")


@pytest.mark.parametrize("method,path", [
    ("get", "/v1/responses/r"), ("post", "/v1/responses/r/cancel"),
    ("delete", "/v1/responses/r"), ("get", "/v1/responses/r/input_items"),
    ("get", "/v1/responses/r?stream=true"),
    ("get", "/v1/responses/r?provider=openai"), ("post", "/v1/responses/r/cancel?provider=oracle"),
])
def test_store_down_an_id_is_a_503_and_no_provider_is_asked(storeless, upstream, method, path):
    """Who owns the id is unknown, so nothing a provider holds may be answered: not by
    probing, not by hint (`upstream` fails the test on any call)."""
    resp = getattr(storeless, method)(path, headers=auth())

    assert_envelope(resp, 503, "provider_error", code="store_unavailable")
    assert resp.headers["Retry-After"] == "1"


def test_store_down_a_shared_deployment_cancels_by_hint_and_says_so(shared_storeless, upstream,
                                                                    caplog):
    upstream.post(cancel_url("oracle", "r"), json=upstream_response("r"))

    with caplog.at_level(logging.WARNING):
        resp = shared_storeless.post("/v1/responses/r/cancel?provider=oracle", headers=auth())

    assert resp.get_json()["provider"] == "oracle"
    assert "Redis store" in caplog.text and "routing r by hint or probing" in caplog.text


def test_store_down_a_shared_deployment_retrieves_by_probing(shared_storeless, upstream):
    upstream.get(retrieve_url("openai", "r"), json=upstream_response("r", status="in_progress"))

    resp = shared_storeless.get("/v1/responses/r", headers=auth())

    assert resp.get_json()["provider"] == "openai"


def test_store_down_a_create_at_a_provider_that_keeps_it_is_withdrawn_there(storeless, upstream,
                                                                          caplog):
    """Left at the provider with no owner recorded, any key could have it by its id."""
    upstream.post(create_url("openai"), json=upstream_response("resp_lost", status="queued"))
    upstream.post(cancel_url("openai", "resp_lost"), json=upstream_response("resp_lost"))
    upstream.delete(retrieve_url("openai", "resp_lost"),
                    json={"id": "resp_lost", "object": "response", "deleted": True})

    with caplog.at_level(logging.WARNING):
        resp = storeless.post("/v1/responses", json={"model": "openai/m", "background": True},
                              headers=auth())

    assert_envelope(resp, 503, "provider_error", code="store_unavailable")
    assert [(c.request.method, c.request.url) for c in upstream.calls] == [
        ("POST", create_url("openai")), ("POST", cancel_url("openai", "resp_lost")),
        ("DELETE", retrieve_url("openai", "resp_lost"))]
    assert "resp_lost was withdrawn at openai" in caplog.text


def test_store_down_a_create_that_cannot_be_withdrawn_says_so_loudly(storeless, upstream,
                                                                     caplog):
    upstream.post(create_url("xai"), json=upstream_response("resp_stuck", status="completed"))
    upstream.delete(retrieve_url("xai", "resp_stuck"), status=500)

    with caplog.at_level(logging.WARNING):
        resp = storeless.post("/v1/responses", json={"model": "xai/m"}, headers=auth())

    assert_envelope(resp, 503, "provider_error", code="store_unavailable")
    [record] = [r for r in caplog.records if "nor withdrawn" in r.getMessage()]
    assert record.levelno == logging.ERROR and "resp_stuck" in record.getMessage()


@pytest.mark.parametrize("client_fixture", ["storeless", "shared_storeless"])
def test_store_down_a_create_nobody_else_could_reach_is_answered_and_logged(
        request, upstream, caplog, client_fixture):
    """groq keeps nothing (and a shared deployment has no owners): the answer goes out,
    and the log says what was not stored."""
    client = request.getfixturevalue(client_fixture)
    provider = "groq" if client_fixture == "storeless" else "openai"
    upstream.post(create_url(provider), json=upstream_response("resp_lost", status="completed"))

    with caplog.at_level(logging.WARNING):
        resp = client.post("/v1/responses", json={"model": f"{provider}/m"}, headers=auth())

    assert resp.status_code == 200 and resp.get_json()["id"] == "resp_lost"
    [record] = [r for r in caplog.records if f"response resp_lost at {provider} was not stored"
                in r.getMessage()]
    assert record.levelno == logging.WARNING


def test_a_stored_provider_this_gateway_does_not_know_is_ignored(client, cancel, upstream):
    store = client.application.extensions["gateway"].store
    store.record("r", "retired-provider", upstream_response("r", status="in_progress"))
    upstream.post(cancel_url("openai", "r"), json=upstream_response("r"))

    resp = cancel("r")  # probed, as if the store did not hold it

    assert resp.get_json()["provider"] == "openai"
