"""Properties over many generated inputs: response ids from clients, bodies from providers."""

import json
import re
import uuid
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
def client(tmp_path_factory):
    store = tmp_path_factory.mktemp("properties") / "store.sqlite3"  # no other test's answers
    return create_app({**ENV, "STORE_URL": f"sqlite:///{store}"}).test_client()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response_id=ids)
def test_an_id_is_refused_or_sent_as_one_segment(client, response_id):
    encoded = quote(response_id, safe="")  # what the official SDK sends
    with responses.RequestsMock(assert_all_requests_are_fired=False) as upstream:
        # In progress, not cancelled: a stored cancel would be answered without a call.
        upstream.add_callback(responses.POST, UPSTREAM, callback=lambda request: (
            200, {}, '{"status": "in_progress"}'))

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



json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=20,
)
# Bodies shaped like a Response, with any JSON in any of its fields, or any JSON at all.
FIELDS = ["id", "object", "created_at", "status", "model", "output", "error", "usage",
          "provider"]
bodies = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
    st.fixed_dictionaries({"output": st.lists(st.dictionaries(
        st.sampled_from(["type", "content", "id", "status", "role"]), json_values))}),
    st.fixed_dictionaries({"usage": st.dictionaries(st.sampled_from(
        ["input_tokens", "input_tokens_details", "output_tokens_details", "raw_usage", "x"]),
        json_values)}),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies)
def test_any_provider_body_is_a_200_or_a_502_never_a_crash(client, body):
    response_id = f"resp_{uuid.uuid4().hex}"  # a new id each time: the store has no answer
    with responses.RequestsMock() as upstream:
        upstream.post(UPSTREAM, body=json.dumps(body), content_type="application/json")

        resp = client.post(f"/v1/responses/{response_id}/cancel?provider=openai",
                           headers={"Authorization": f"Bearer {GATEWAY_KEY}"})

    assert resp.status_code in (200, 502), resp.get_json()
    answer = resp.get_json()
    if resp.status_code == 200:
        assert (answer["id"], answer["object"], answer["provider"]) == (
            response_id, "response", "openai")
    else:
        assert answer["error"]["type"] == "provider_error"


@settings(max_examples=500, deadline=None)
@given(body=bodies)
def test_a_loaded_response_is_already_what_dumping_it_would_give(body):
    """contract_response() stops at load(): for anything load accepts, dump is the identity."""
    from marshmallow import ValidationError

    from schemas import response_schema

    try:
        loaded = response_schema.load(body)
    except ValidationError:
        return
    assert response_schema.dump(loaded) == loaded


STRUCTURE = '"\\{}[],:' + "é\u2028"  # what a string may hide from a count of the body
values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=STRUCTURE + "ab", max_size=8),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(alphabet=STRUCTURE, max_size=4), inner, max_size=5),
    max_leaves=40)


def shape(value):
    """Objects and arrays, and those plus the commas between items and members, walked."""
    if not isinstance(value, (dict, list)):
        return 0, 0
    children = list(value.values() if isinstance(value, dict) else value)
    inner = [shape(child) for child in children]
    containers = 1 + sum(c for c, _ in inner)
    return containers, containers + max(len(children) - 1, 0) + sum(v - c for c, v in inner)


@settings(max_examples=500, deadline=None)
@given(value=values, ascii_only=st.booleans())
def test_a_body_counted_outside_its_strings_is_counted_exactly(value, ascii_only):
    """The bound on values counts brackets and commas before parsing: outside strings,
    that count is the walked one, whatever the strings hide (escaped quotes, backslashes)."""
    from request_body import count_shape, outside_strings

    data = json.dumps(value, ensure_ascii=ascii_only).encode()

    assert count_shape(outside_strings(data, 10**6)) == shape(value)
    assert count_shape(data) >= shape(value)  # the quick count is an upper bound
