"""Shared fixtures: an app built from a test environment, and mocked providers."""

import pytest
import responses

from app import create_app
from fake_upstream import FakeProvider
from support import ENV, GATEWAY_KEY


@pytest.fixture
def upstream():
    """Mocked providers; the test fails if a registered answer is never asked for."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def make_client():
    """Build a test client from ENV with overrides; a None value removes a variable."""

    def make(**overrides):
        env = {k: v for k, v in {**ENV, **overrides}.items() if v is not None}
        return create_app(env).test_client()

    return make


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def cancel(client):
    """POST a cancel through the gateway with a valid key, as the SDK does."""

    def post(response_id="resp_123", provider=None, headers=None, **kwargs):
        query = {"provider": provider} if provider is not None else {}
        return client.post(
            f"/v1/responses/{response_id}/cancel",
            query_string=query,
            headers={"Authorization": f"Bearer {GATEWAY_KEY}", **(headers or {})},
            **kwargs,
        )

    return post


@pytest.fixture(scope="module")
def provider():
    """A fake OpenAI-like provider listening on 127.0.0.1."""
    with FakeProvider() as fake:
        yield fake
