"""GET /openapi.json comes from the schemas and matches the contract it implements."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "spec" / "cancel-response.openapi.yaml"  # our copy: this test always runs
SHARED = ROOT.parent / "shared" / "spec" / "cancel-response.openapi.yaml"  # where it came from
CANCEL = "/v1/responses/{id}/cancel"


@pytest.fixture(scope="module")
def contract():
    return yaml.safe_load(CONTRACT.read_text())


def test_our_copy_of_the_contract_is_the_shared_one(contract):
    if not SHARED.exists():
        pytest.skip(f"no shared contract beside this checkout to compare with ({SHARED})")
    assert contract == yaml.safe_load(SHARED.read_text())


@pytest.fixture
def served(client):
    resp = client.get("/openapi.json")  # no key needed: a spec holds no secrets
    assert resp.status_code == 200
    return resp.get_json()


def shape(node, doc):
    """What a schema says about data: types, nullability, enums, properties, items, required."""
    while "$ref" in node:
        node = doc["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
    out = {k: node[k] for k in ("type", "enum", "format") if k in node}
    out["nullable"] = node.get("nullable", False)
    out["required"] = sorted(node.get("required", []))
    if "properties" in node:
        out["properties"] = {k: shape(v, doc) for k, v in node["properties"].items()}
    if "items" in node:
        out["items"] = shape(node["items"], doc)
    return out


def test_the_cancel_path_matches(contract, served):
    ours, theirs = served["paths"][CANCEL]["post"], contract["paths"][CANCEL]["post"]

    def params(op):
        return {(p["name"], p["in"], p.get("required", False), p["schema"]["type"])
                for p in op["parameters"]}

    assert params(ours) == params(theirs)
    assert set(ours["responses"]) == set(theirs["responses"])
    for status, response in theirs["responses"].items():
        theirs_schema = response["content"]["application/json"]["schema"]
        ours_schema = ours["responses"][status]["content"]["application/json"]["schema"]
        assert covers(shape(ours_schema, served), shape(theirs_schema, contract)), status
    assert ours["security"] == [{"BearerAuth": []}]
    assert served["components"]["securitySchemes"]["BearerAuth"]["scheme"] == "bearer"


def covers(ours, theirs):
    """Our shape is the contract's, give or take properties it does not name, which are
    optional: a client that reads the contract reads what we serve."""
    extra = set(ours.get("properties", {})) - set(theirs.get("properties", {}))
    if extra & set(ours["required"]):
        return False
    if "properties" in ours:
        ours = {**ours, "properties": {k: v for k, v in ours["properties"].items()
                                       if k not in extra}}
    nested = {k for k in ("properties",) if k in ours and k in theirs}
    for key in nested:
        if set(ours[key]) != set(theirs[key]) or not all(
                covers(ours[key][k], theirs[key][k]) for k in ours[key]):
            return False
    if "items" in ours and "items" in theirs and not covers(ours["items"], theirs["items"]):
        return False
    flat = ("type", "enum", "format", "nullable", "required")
    return all(ours.get(k) == theirs.get(k) for k in flat) and (
        ("items" in ours) == ("items" in theirs))


def test_every_contract_schema_is_served_with_the_same_shape(contract, served):
    for name, schema in contract["components"]["schemas"].items():
        assert name in served["components"]["schemas"], name
        assert covers(shape(served["components"]["schemas"][name], served),
                      shape(schema, contract)), name


def test_what_we_serve_beyond_the_contract_is_only_optional_properties(contract, served):
    output_item = "core.ResponsesOutputItem"
    ours = shape(served["components"]["schemas"][output_item], served)
    theirs = shape(contract["components"]["schemas"][output_item], contract)
    assert set(ours["properties"]) - set(theirs["properties"]) == {"namespace"}
    assert covers(ours, theirs)
    assert not covers({**ours, "required": ["namespace"]}, theirs)  # a required one would not
    assert not covers({**ours, "type": "array"}, theirs)


def test_the_document_is_what_the_schemas_build(served):
    from openapi import build_spec

    assert served == build_spec()


def test_every_api_route_is_documented_so_the_fuzzer_reaches_it(client, served):
    """Each /v1 route and method the app serves is in the document schemathesis fuzzes."""
    app = client.application
    routes = {
        (re.sub(r"<[^:>]*:?(\w+)>", r"{\1}", rule.rule).replace("{response_id}", "{id}"),
         method.lower())
        for rule in app.url_map.iter_rules() if rule.rule.startswith("/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, ops in served["paths"].items() for method in ops}

    assert routes == documented
