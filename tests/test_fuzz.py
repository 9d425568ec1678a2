"""Schemathesis fuzzes the served OpenAPI document: whatever it sends, the answer is a
declared status with a JSON body matching the schema declared for it, and never a 500."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app import create_app
from support import GATEWAY_KEY


def not_a_crash(ctx, response, case):
    """A 500 is a gateway bug; anything else must be JSON, or a create's event stream."""
    assert response.status_code != 500, response.text
    content_type = {k.lower(): v for k, v in response.headers.items()}["content-type"][0]
    streamed = response.status_code == 200 and content_type.startswith("text/event-stream")
    assert content_type.startswith("application/json") or streamed, response.text


CHECKS = [not_a_crash, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(provider, tmp_path_factory):
    store = tmp_path_factory.mktemp("fuzz") / "store.sqlite3"
    app = create_app({
        "STORE_URL": f"sqlite:///{store}",
        "GATEWAY_API_KEYS": GATEWAY_KEY,
        "OPENAI_API_KEY": "sk-fuzz",
        "OPENAI_BASE_URL": provider.base_url,
        "ANTHROPIC_API_KEY": "sk-ant-fuzz",
        "ANTHROPIC_BASE_URL": provider.base_url,  # creates there are now translated and sent
        "UPSTREAM_TIMEOUT": "5",
    })
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("authorization", [f"Bearer {GATEWAY_KEY}", "Bearer wrong", None],
                         ids=["key", "wrong-key", "no-key"])
def test_the_api_keeps_its_contract(api_schema, mode, authorization):
    headers = {"Authorization": authorization} if authorization else {}

    @given(case=api_schema.as_strategy(mode))
    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    def call(case):
        case.call_and_validate(headers=headers, checks=CHECKS)

    call()
