"""The response id: refused when it cannot be one path segment, escaped whole when it can."""

from urllib.parse import quote

import pytest

from support import assert_envelope, cancel_url, upstream_response


@pytest.mark.parametrize("raw,label", [
    ("", "empty"),
    ("x" * 257, "too long"),
    ("a%20b", "space"),
    ("a%09b", "tab"),
    ("a%0Ab", "newline"),
    ("a%00b", "NUL"),
    ("a%7Fb", "DEL"),
    ("%C2%A0", "no-break space"),
    ("%2E", "dot"),
    ("%2E%2E", "dot dot"),
])
def test_bad_ids_are_400_on_id(cancel, upstream, raw, label):
    resp = cancel(raw, provider="openai")

    error = assert_envelope(resp, 400, "invalid_request_error", param="id")
    assert "response id" in error["message"]
    assert len(upstream.calls) == 0


def test_longest_allowed_id_passes(cancel, upstream):
    rid = "r" * 256
    upstream.post(cancel_url("openai", rid), json=upstream_response(rid))

    assert cancel(rid, provider="openai").status_code == 200


@pytest.mark.parametrize("rid", [
    "a?b", "a#b", "..a", "a..", "a%b", "a;b", "ünïcødé", "a&provider=azure", "%2F",
])
def test_ids_reach_upstream_as_exactly_one_escaped_segment(cancel, upstream, rid):
    escaped = quote(rid, safe="")
    mock = upstream.post(cancel_url("openai", escaped), json=upstream_response("whatever"))

    resp = cancel(quote(rid, safe=""), provider="openai")

    assert resp.status_code == 200
    assert resp.get_json()["id"] == rid  # the id the client sent, not upstream's
    assert mock.calls[0].request.path_url == f"/v1/responses/{escaped}/cancel"


@pytest.mark.parametrize("path_id", ["a/b", "a%2Fb", "a%2F..%2Fb"])
def test_a_slash_in_the_id_is_no_route(cancel, upstream, path_id):
    # A slash, even percent-encoded, splits the path before routing: the id can
    # never carry one, so it can never reach another upstream path.
    assert_envelope(cancel(path_id, provider="openai"), 404, "not_found_error")
    assert len(upstream.calls) == 0
