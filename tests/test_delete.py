"""DELETE /v1/responses/{id}: forwarded where the provider keeps responses, otherwise done
in the store; a running gateway run is stopped first; afterwards every call answers 404."""

import time

import pytest

from support import (
    OTHER_GATEWAY_KEY, assert_envelope, auth, base_url, create_url, upstream_response,
)

DELETE_ORDER = ["openai", "azure", "xai", "oracle", "bailian", "vllm"]  # native, in order


def delete_url(provider, response_id):
    return f"{base_url(provider)}/responses/{response_id}"


def gone(provider, response_id):
    return {"id": response_id, "object": "response", "deleted": True}


def assert_gone_everywhere(client, response_id, upstream):
    """Retrieve, cancel and a second delete all answer 404, asking no provider."""
    calls = len(upstream.calls) if upstream is not None else 0
    for method, path in [("get", ""), ("post", "/cancel"), ("delete", "")]:
        resp = getattr(client, method)(f"/v1/responses/{response_id}{path}", headers=auth())
        assert_envelope(resp, 404, "not_found_error")
    if upstream is not None:
        assert len(upstream.calls) == calls


def test_a_native_response_is_deleted_at_its_provider_then_gone(client, upstream):
    upstream.post(create_url("openai"), json=upstream_response("resp_n", status="queued"))
    client.post("/v1/responses", headers=auth(), json={"model": "openai/m", "background": True})
    upstream.delete(delete_url("openai", "resp_n"), json=gone("openai", "resp_n"))

    resp = client.delete("/v1/responses/resp_n", headers=auth())

    assert (resp.status_code, resp.get_json()) == (200, {"id": "resp_n", "object": "response",
                                                         "deleted": True})
    sent = upstream.calls[-1].request
    assert sent.method == "DELETE" and sent.headers["Authorization"] == "Bearer sk-openai-secret-0001"
    assert_gone_everywhere(client, "resp_n", upstream)


def test_an_unknown_id_is_probed_where_responses_can_be_deleted(client, upstream):
    for provider in DELETE_ORDER[:2]:
        upstream.delete(delete_url(provider, "resp_u"), status=404)
    upstream.delete(delete_url("xai", "resp_u"), json=gone("xai", "resp_u"))

    resp = client.delete("/v1/responses/resp_u", headers=auth())

    assert resp.status_code == 200
    assert [c.request.url for c in upstream.calls] == [
        delete_url(p, "resp_u") for p in DELETE_ORDER[:3]]
    assert_gone_everywhere(client, "resp_u", upstream)


def test_an_id_no_provider_holds_is_404_and_one_nobody_can_delete_there_501(client, upstream):
    for provider in DELETE_ORDER:
        upstream.delete(delete_url(provider, "resp_none"), status=404)

    assert_envelope(client.delete("/v1/responses/resp_none", headers=auth()), 404,
                    "not_found_error")
    assert_envelope(client.delete("/v1/responses/resp_none?provider=groq", headers=auth()),
                    501, "invalid_request_error", code="unsupported_response_operation")


def test_a_response_only_the_store_keeps_is_deleted_there(client, upstream):
    upstream.post(create_url("groq"), json=upstream_response("resp_g", status="completed"))
    client.post("/v1/responses", headers=auth(), json={"model": "groq/m"})
    calls = len(upstream.calls)

    resp = client.delete("/v1/responses/resp_g", headers=auth())

    assert resp.get_json()["deleted"] is True and len(upstream.calls) == calls
    assert_gone_everywhere(client, "resp_g", upstream)


def test_a_running_gateway_run_is_stopped_then_deleted_for_good(streaming_client, streamer):
    created = streaming_client.post("/v1/responses", headers=auth(), json={
        "model": "anthropic/words-200-20", "input": "del-run", "background": True}).get_json()
    streamer.wait_for("del-run", lambda s: s.sent >= 2)

    asked_at = time.monotonic()
    resp = streaming_client.delete(f"/v1/responses/{created['id']}", headers=auth())

    assert resp.status_code == 200 and resp.get_json()["deleted"] is True
    stream = streamer.wait_for("del-run", lambda s: s.client_left, seconds=2)
    assert stream.gone_at - asked_at < 1 and not stream.finished
    time.sleep(0.3)  # the run's last writes come after: none brings it back
    assert_gone_everywhere(streaming_client, created["id"], None)


def test_another_keys_response_is_not_deleted(client, upstream):
    upstream.post(create_url("groq"), json=upstream_response("resp_o", status="completed"))
    client.post("/v1/responses", headers=auth(), json={"model": "groq/m"})

    theirs = client.delete("/v1/responses/resp_o", headers=auth(OTHER_GATEWAY_KEY))

    assert_envelope(theirs, 404, "not_found_error")
    assert client.get("/v1/responses/resp_o", headers=auth()).status_code == 200


@pytest.mark.parametrize("response_id", ["", "a b", ".."])
def test_a_bad_id_is_400(client, response_id):
    assert_envelope(client.delete(f"/v1/responses/{response_id}", headers=auth()), 400,
                    "invalid_request_error", param="id")
