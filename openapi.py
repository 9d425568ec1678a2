"""The OpenAPI document for the gateway, generated from the marshmallow schemas.

The schemas are the one source of truth: apispec's marshmallow plugin turns
them into components named as the contract names them (core.X), and the
operations below reference them. Served by app.py at GET /openapi.json.
"""

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin, resolver

from schemas import (
    ERROR_TYPES,
    ConversationSchema,
    DeletedConversationSchema,
    DeletedResponseSchema,
    InputTokensSchema,
    InputItemListSchema,
    OpenAIErrorEnvelopeSchema,
    ProviderListSchema,
    ResponsesResponseSchema,
)

ERROR_STATUSES = {
    "400": "Bad Request",
    "401": "Unauthorized",
    "404": "Not Found",
    "501": "Not Implemented",
    "502": "Bad Gateway",
}
# The paths the gateway adds to the contract declare every status they answer.
GATEWAY_STATUSES = {
    **ERROR_STATUSES,
    "408": "Request Timeout",
    "413": "Request Entity Too Large",
    "429": "Too Many Requests",
    "503": "Service Unavailable",
    "504": "Gateway Timeout",
}
# Conversations live in the gateway's store: no provider is asked.
CONVERSATION_STATUSES = {code: text for code, text in GATEWAY_STATUSES.items()
                         if code in ("400", "401", "404", "408", "413", "503")}
ID_PARAM = {"name": "id", "in": "path", "required": True, "description": "Response ID",
            "schema": {"type": "string"}}
CONVERSATION_ID = {**ID_PARAM, "name": "conversation_id", "description": "Conversation ID"}
ITEM_ID = {**ID_PARAM, "name": "item_id", "description": "Item ID"}
# Forwarded as the provider's Responses API expects (translated for Chat-only providers);
# only these fields are the gateway's concern.
CREATE_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object",
    "properties": {
        "model": {"type": "string", "description": "'provider/model', e.g. 'openai/gpt-4o-mini'"},
        "background": {"type": "boolean", "description": (
            "Run in the background: at the provider where it can cancel natively, otherwise "
            "by the gateway, which answers at once and stops the generation on cancel")},
        "stream": {"type": "boolean", "description": (
            "true: answer with server-sent events in the Responses API's format")},
    },
    "additionalProperties": True,
}}}}
ITEMS = {"type": "array", "items": {"type": "object", "additionalProperties": True},
         "description": "Items in the Responses API's shapes (messages, function calls, ...)"}
METADATA = {"type": "object", "additionalProperties": {"type": "string"},
            "description": "Up to 16 string values, as OpenAI takes them"}


def json_body(properties, required=()):
    """A JSON object request body with these properties."""
    schema = {"type": "object", "properties": properties, "additionalProperties": True}
    if required:
        schema["required"] = list(required)
    return {"required": True, "content": {"application/json": {"schema": schema}}}


STREAM_PARAMS = [
    {"name": "stream", "in": "query", "description": "true: stream a background response "
     "again, as server-sent events", "schema": {"type": "boolean", "default": False}},
    {"name": "starting_after", "in": "query", "description": "With stream=true, the events "
     "after this sequence number", "schema": {"type": "integer", "minimum": -1}},
]
LIST_PARAMS = [
    {"name": "limit", "in": "query", "description": "Items on a page, 1 to 100",
     "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
    {"name": "order", "in": "query", "description": "asc: oldest first; desc: newest first",
     "schema": {"type": "string", "enum": ["asc", "desc"], "default": "desc"}},
    {"name": "after", "in": "query", "description": "List the items after this item id",
     "schema": {"type": "string"}},
]


def provider_param(description):
    """The optional ?provider= query parameter."""
    return {"name": "provider", "in": "query", "schema": {"type": "string"},
            "description": description}


def sse_event(description):
    """One server-sent event of a stream, as tools that read SSE check each: its type, and
    the event as JSON (keep-alive comments carry no event)."""
    return {"type": "object", "description": description, "required": ["event", "data"],
            "properties": {"event": {"type": "string", "description": "the event's type"},
                           "data": {"type": "string", "description": "the event, as JSON"}}}


def build_spec():
    """Build the OpenAPI 3.0 document as a plain dict."""
    spec = APISpec(
        title="GoModel API",
        version="1.0",
        openapi_version="3.0.0",
        info={"description": "Drop-in OpenAI-compatible gateway: create, retrieve and "
                             "cancel background responses at whichever provider holds them."},
        plugins=[MarshmallowPlugin(schema_name_resolver=lambda s: f"core.{resolver(s)}")],
    )
    spec.components.security_scheme("BearerAuth", {"type": "http", "scheme": "bearer"})
    spec.components.schema("core.ErrorType", {"type": "string", "enum": list(ERROR_TYPES)})
    spec.components.schema("core.ResponsesResponse", schema=ResponsesResponseSchema)
    spec.components.schema("core.OpenAIErrorEnvelope", schema=OpenAIErrorEnvelopeSchema)
    spec.components.schema("core.ProviderList", schema=ProviderListSchema)
    spec.components.schema("core.DeletedResponse", schema=DeletedResponseSchema)
    spec.components.schema("core.InputItemList", schema=InputItemListSchema)
    spec.components.schema("core.InputTokens", schema=InputTokensSchema)
    spec.components.schema("core.Conversation", schema=ConversationSchema)
    spec.components.schema("core.DeletedConversation", schema=DeletedConversationSchema)
    create = operation(
        "Create a response",
        [provider_param("Provider to create at, instead of a 'provider/' prefix on model")],
        GATEWAY_STATUSES, request_body=CREATE_BODY,
    )
    create["responses"]["200"]["content"]["text/event-stream"] = {"schema": sse_event(
        "With stream: true, the Responses API's events")}
    spec.path(path="/v1/responses", operations={"post": create})
    spec.path(path="/v1/responses/input_tokens", operations={"post": operation(
        "Count a create's input tokens, at a provider that counts them (else a 501)",
        [provider_param("Provider to count at, instead of a 'provider/' prefix on model")],
        GATEWAY_STATUSES, request_body=CREATE_BODY, ok="core.InputTokens")})
    compact = operation(
        "Compact a conversation, at a provider that compacts (else a 501)",
        [provider_param("Provider to compact at, instead of a 'provider/' prefix on model")],
        GATEWAY_STATUSES, request_body=CREATE_BODY)
    compact["responses"]["200"]["content"]["application/json"]["schema"] = {
        "type": "object", "additionalProperties": True,
        "description": "The provider's response.compaction object, as it answered it"}
    spec.path(path="/v1/responses/compact", operations={"post": compact})
    no_body = {k: v for k, v in GATEWAY_STATUSES.items() if k != "413"}
    retrieve = operation(
        "Get a response",
        [ID_PARAM, provider_param("Provider override for native retrieval"), *STREAM_PARAMS],
        no_body)
    retrieve["responses"]["200"]["content"]["text/event-stream"] = {"schema": sse_event(
        "With stream=true, a background response's events after starting_after, then the "
        "rest as they come")}
    spec.path(path="/v1/responses/{id}", operations={
        "get": retrieve,
        "delete": operation(
            "Delete a response",
            [ID_PARAM, provider_param("Provider override for native deletion")], no_body,
            ok="core.DeletedResponse"),
    })
    spec.path(path="/v1/responses/{id}/input_items", operations={"get": operation(
        "List a response's input items",
        [ID_PARAM, *LIST_PARAMS, provider_param("Provider override for native listing")],
        no_body, ok="core.InputItemList",
    )})
    spec.path(path="/v1/responses/{id}/cancel", operations={"post": operation(
        "Cancel a response", [ID_PARAM, provider_param("Provider override for native cancellation")],
        ERROR_STATUSES,  # the contract's own list, though 413, 429 and 504 also occur
    )})
    spec.path(path="/v1/providers", operations={"get": {
        "tags": ["providers"],
        "summary": "List providers and what each can do",
        "security": [{"BearerAuth": []}],
        "responses": {
            "200": json_response("OK", "core.ProviderList"),
            "401": json_response("Unauthorized", "core.OpenAIErrorEnvelope"),
        },
    }})
    add_conversations(spec)
    doc = spec.to_dict()
    # The plugin inlines the enum; the contract names it once, as core.ErrorType.
    error_object = doc["components"]["schemas"]["core.OpenAIErrorObject"]
    error_object["properties"]["type"] = {"$ref": "#/components/schemas/core.ErrorType"}
    return doc


def add_conversations(spec):
    """The Conversations API's paths: kept by the gateway, at every provider."""
    def conversation_op(summary, parameters, ok="core.Conversation", request_body=None):
        return operation(summary, parameters, CONVERSATION_STATUSES, request_body, ok,
                         tag="conversations")

    items_body = json_body({"items": ITEMS}, required=["items"])
    spec.path(path="/v1/conversations", operations={"post": conversation_op(
        "Create a conversation", [],
        request_body=json_body({"items": ITEMS, "metadata": METADATA}))})
    spec.path(path="/v1/conversations/{conversation_id}", operations={
        "get": conversation_op("Get a conversation", [CONVERSATION_ID]),
        "post": conversation_op("Update a conversation's metadata", [CONVERSATION_ID],
                                request_body=json_body({"metadata": METADATA})),
        "delete": conversation_op("Delete a conversation", [CONVERSATION_ID],
                                  ok="core.DeletedConversation"),
    })
    spec.path(path="/v1/conversations/{conversation_id}/items", operations={
        "get": conversation_op("List a conversation's items", [CONVERSATION_ID, *LIST_PARAMS, {
            "name": "include", "in": "query", "description": "Taken, as OpenAI takes it; "
            "items are kept whole", "schema": {"type": "array", "items": {"type": "string"}}}],
            ok="core.InputItemList"),
        "post": conversation_op("Add items to a conversation", [CONVERSATION_ID],
                                ok="core.InputItemList", request_body=items_body),
    })
    item = {"type": "object", "additionalProperties": True}
    retrieve_item = conversation_op("Get a conversation's item", [CONVERSATION_ID, ITEM_ID])
    retrieve_item["responses"]["200"]["content"]["application/json"]["schema"] = item
    spec.path(path="/v1/conversations/{conversation_id}/items/{item_id}", operations={
        "get": retrieve_item,
        "delete": conversation_op("Delete a conversation's item (answers the conversation)",
                                  [CONVERSATION_ID, ITEM_ID]),
    })


def operation(summary, parameters, statuses, request_body=None, ok="core.ResponsesResponse",
              tag="responses"):
    """An operation: Bearer auth, `ok` (by default a Response) on 200, the envelope
    otherwise."""
    spec = {
        "tags": [tag],
        "summary": summary,
        "security": [{"BearerAuth": []}],
        "parameters": parameters,
        "responses": {
            "200": json_response("OK", ok),
            **{code: json_response(text, "core.OpenAIErrorEnvelope")
               for code, text in statuses.items()},
        },
    }
    if request_body:
        spec["requestBody"] = request_body
    return spec


def json_response(description, component):
    """A response whose JSON body is the named component."""
    return {"description": description,
            "content": {"application/json": {"schema": component}}}
