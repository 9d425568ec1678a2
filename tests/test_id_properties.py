"""Property: any response id either gets a 4xx envelope, or reaches the provider as
exactly one percent-encoded path segment that decodes back to it."""

import re
from urllib.parse import quote, unquote

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from support import ENV, GATEWAY_KEY

UPSTREAM = re.compile(r"https://api\.openai\.com/v1/responses/.*")
TRICKY = "./%?#;&=+ \t\r\n\x00\x7f\u00a0\u2028éZ9-_~:@!$'()*,[]"

ids = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=TRICKY, max_size=12),
    st.sampled_from(["", ".", "..", "...", "%2F", "%2E%2E", "a/b", "x" * 256, "x" * 257]),
)


@pytest.fixture(scope="module")
def client():
    return create_app(ENV).test_client()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response_id=ids)
def test_an_id_is_refused_or_sent_as_one_segment(client, response_id):
    encoded = quote(response_id, safe="")  # what the official SDK sends
    with responses.RequestsMock(assert_all_requests_are_fired=False) as upstream:
        upstream.add_callback(responses.POST, UPSTREAM, callback=lambda request: (
            200, {}, '{"status": "cancelled"}'))

        resp = client.post(f"/v1/responses/{encoded}/cancel?provider=openai",
                           headers={"Authorization": f"Bearer {GATEWAY_KEY}"})

        calls = list(upstream.calls)
    if 400 <= resp.status_code < 500:
        assert set(resp.get_json()["error"]) == {"type", "message", "param", "code"}
        assert calls == []
        return
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["id"] == response_id
    [call] = calls
    path = call.request.path_url
    assert path.startswith("/v1/responses/") and path.endswith("/cancel")
    segment = path[len("/v1/responses/"):-len("/cancel")]
    assert "/" not in segment and "?" not in segment and "#" not in segment
    assert segment not in (".", "..")
    assert unquote(segment) == response_id

