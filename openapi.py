"""The OpenAPI document for the gateway, generated from the marshmallow schemas.

The schemas are the one source of truth: apispec's marshmallow plugin turns
them into components named as the contract names them (core.X), and the
operations below reference them. Served by app.py at GET /openapi.json.
"""

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin, resolver

from schemas import ERROR_TYPES, OpenAIErrorEnvelopeSchema, ResponsesResponseSchema

ERROR_STATUSES = {
    "400": "Bad Request",
    "401": "Unauthorized",
    "404": "Not Found",
    "501": "Not Implemented",
    "502": "Bad Gateway",
}


def build_spec():
    """Build the OpenAPI 3.0 document as a plain dict."""
    spec = APISpec(
        title="GoModel API",
        version="1.0",
        openapi_version="3.0.0",
        info={"description": "Drop-in OpenAI-compatible gateway: cancel a background "
                             "response at whichever provider holds it."},
        plugins=[MarshmallowPlugin(schema_name_resolver=lambda s: f"core.{resolver(s)}")],
    )
    spec.components.security_scheme("BearerAuth", {"type": "http", "scheme": "bearer"})
    spec.components.schema("core.ErrorType", {"type": "string", "enum": list(ERROR_TYPES)})
    spec.components.schema("core.ResponsesResponse", schema=ResponsesResponseSchema)
    spec.components.schema("core.OpenAIErrorEnvelope", schema=OpenAIErrorEnvelopeSchema)
    spec.path(path="/v1/responses/{id}/cancel", operations={"post": {
        "tags": ["responses"],
        "summary": "Cancel a response",
        "security": [{"BearerAuth": []}],
        "parameters": [
            {"name": "id", "in": "path", "required": True, "description": "Response ID",
             "schema": {"type": "string"}},
            {"name": "provider", "in": "query", "schema": {"type": "string"},
             "description": "Provider override for native cancellation"},
        ],
        "responses": {
            "200": json_response("OK", "core.ResponsesResponse"),
            **{code: json_response(text, "core.OpenAIErrorEnvelope")
               for code, text in ERROR_STATUSES.items()},
        },
    }})
    doc = spec.to_dict()
    # The plugin inlines the enum; the contract names it once, as core.ErrorType.
    error_object = doc["components"]["schemas"]["core.OpenAIErrorObject"]
    error_object["properties"]["type"] = {"$ref": "#/components/schemas/core.ErrorType"}
    return doc


def json_response(description, component):
    """A response whose JSON body is the named component."""
    return {"description": description,
            "content": {"application/json": {"schema": component}}}
