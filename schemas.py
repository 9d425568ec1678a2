"""The shapes the gateway answers with: the Response object, the error envelope, the
provider list, a deletion and a page of input items.

The first two are field for field what ../shared/spec/cancel-response.openapi.yaml
declares; each class is named after its contract component (core.X is XSchema),
so the OpenAPI document built from them (openapi.py) uses the contract's names.
The provider list is the gateway's own, in the shape of OpenAI's list endpoints.
Response schemas load an upstream body (dropping what the contract does not
name, and nulls) and dump it back, so a client only ever sees the contract.
"""

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate

from providers.errors import BadGateway

ERROR_TYPES = (
    "provider_error",
    "rate_limit_error",
    "invalid_request_error",
    "authentication_error",
    "not_found_error",
)


class LenientSchema(Schema):
    """Loads upstream data: unknown keys are dropped, and a null counts as absent."""

    class Meta:
        unknown = EXCLUDE

    @pre_load
    def drop_nulls(self, data, **kwargs):
        if not isinstance(data, dict):
            return data  # let marshmallow report the wrong type
        return {k: v for k, v in data.items() if v is not None}


class ResponsesErrorSchema(LenientSchema):
    code = fields.String()
    message = fields.String()


class ImageURLContentSchema(LenientSchema):
    detail = fields.String()
    media_type = fields.String()
    url = fields.String()


class InputAudioContentSchema(LenientSchema):
    data = fields.String()
    format = fields.String()


class ResponsesContentItemSchema(LenientSchema):
    annotations = fields.List(fields.Dict(), metadata={
        "description": "Providers can return structured annotation objects here (for example\n"
        "citations from native tools), so keep the payload shape liberal.",
    })
    image_url = fields.Nested(ImageURLContentSchema)
    input_audio = fields.Nested(InputAudioContentSchema)
    text = fields.String()
    type = fields.String(
        metadata={"description": '"output_text", "input_image", "input_audio", etc.'}
    )


class ResponsesOutputItemSchema(LenientSchema):
    arguments = fields.String()
    call_id = fields.String()
    content = fields.List(fields.Nested(ResponsesContentItemSchema))
    id = fields.String()
    name = fields.String()
    namespace = fields.String(metadata={
        "description": "The namespace of a namespaced function's call (beyond the contract)"})
    role = fields.String()
    status = fields.String()
    type = fields.String(metadata={"description": '"message", "function_call", etc.'})


class CompletionTokensDetailsSchema(LenientSchema):
    accepted_prediction_tokens = fields.Integer()
    audio_tokens = fields.Integer()
    reasoning_tokens = fields.Integer()
    rejected_prediction_tokens = fields.Integer()


class PromptTokensDetailsSchema(LenientSchema):
    audio_tokens = fields.Integer()
    cached_tokens = fields.Integer()
    image_tokens = fields.Integer()
    text_tokens = fields.Integer()


class ResponsesUsageSchema(Schema):
    completion_tokens_details = fields.Nested(CompletionTokensDetailsSchema)
    input_tokens = fields.Integer()
    output_tokens = fields.Integer()
    prompt_tokens_details = fields.Nested(PromptTokensDetailsSchema)
    raw_usage = fields.Dict()
    total_tokens = fields.Integer()

    # OpenAI's Responses API names the details after input/output; the contract
    # after prompt/completion. Anything else the provider counts is kept in raw_usage.
    RENAMED = {
        "input_tokens_details": "prompt_tokens_details",
        "output_tokens_details": "completion_tokens_details",
    }

    @pre_load
    def from_provider(self, data, **kwargs):
        if not isinstance(data, dict):
            return data
        usage = {self.RENAMED.get(k, k): v for k, v in data.items() if v is not None}
        extra = {k: usage.pop(k) for k in list(usage) if k not in self.fields}
        raw = usage.get("raw_usage", {})
        if extra and isinstance(raw, dict):  # a raw_usage that is no object fails validation
            usage["raw_usage"] = {**extra, **raw}
        return usage


class ResponsesResponseSchema(LenientSchema):
    created_at = fields.Integer()
    error = fields.Nested(ResponsesErrorSchema)
    id = fields.String()
    model = fields.String()
    object = fields.String(metadata={"description": '"response"'})
    output = fields.List(fields.Nested(ResponsesOutputItemSchema))
    provider = fields.String()
    status = fields.String(metadata={"description": '"completed", "failed", "in_progress"'})
    usage = fields.Nested(ResponsesUsageSchema)


class OpenAIErrorObjectSchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(ERROR_TYPES))
    message = fields.String(required=True)
    param = fields.String(required=True, allow_none=True)
    code = fields.String(required=True, allow_none=True)


class OpenAIErrorEnvelopeSchema(Schema):
    error = fields.Nested(OpenAIErrorObjectSchema, required=True)


class ProviderSchema(Schema):
    """One provider the gateway knows, as GET /v1/providers lists it (never keys or URLs)."""

    id = fields.String(required=True)
    object = fields.String(required=True, metadata={"description": '"provider"'})
    configured = fields.Boolean(required=True)
    responses_api = fields.Boolean(required=True, metadata={
        "description": "false: Chat Completions only, so a create is translated"})
    native_cancel = fields.Boolean(required=True)
    cancel = fields.String(required=True, validate=validate.OneOf(("native", "gateway")),
                           metadata={"description": '"native": cancelled at the provider; '
                                     '"gateway": background responses run by the gateway'})


class ProviderListSchema(Schema):
    """OpenAI's list shape: {"object": "list", "data": [...]}."""

    object = fields.String(required=True, metadata={"description": '"list"'})
    data = fields.List(fields.Nested(ProviderSchema), required=True)


class DeletedResponseSchema(Schema):
    """What DELETE /v1/responses/{id} answers, as OpenAI does."""

    id = fields.String(required=True)
    object = fields.String(required=True, metadata={"description": '"response"'})
    deleted = fields.Boolean(required=True)


class InputItemListSchema(Schema):
    """What GET /v1/responses/{id}/input_items answers: a page of input items, as OpenAI
    lists them (each item as the create sent it, with an id)."""

    class Meta:
        unknown = EXCLUDE

    object = fields.String(required=True, metadata={"description": '"list"'})
    data = fields.List(fields.Dict(), required=True)
    first_id = fields.String(allow_none=True, load_default=None)
    last_id = fields.String(allow_none=True, load_default=None)
    has_more = fields.Boolean(required=True)


class ConversationSchema(Schema):
    """A conversation the gateway keeps, as OpenAI's Conversations API answers it."""

    id = fields.String(required=True, metadata={"description": "conv_..."})
    object = fields.String(required=True, metadata={"description": '"conversation"'})
    created_at = fields.Integer(required=True, metadata={"description": "Unix seconds"})
    metadata = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


class DeletedConversationSchema(Schema):
    """What DELETE /v1/conversations/{id} answers."""

    id = fields.String(required=True)
    object = fields.String(required=True, metadata={"description": '"conversation.deleted"'})
    deleted = fields.Boolean(required=True)


class InputTokensSchema(Schema):
    """What POST /v1/responses/input_tokens answers: the provider's own count."""

    object = fields.String(required=True, metadata={"description": '"response.input_tokens"'})
    input_tokens = fields.Integer(required=True)


response_schema = ResponsesResponseSchema()
input_item_list_schema = InputItemListSchema()
deleted_schema = DeletedResponseSchema()
error_envelope_schema = OpenAIErrorEnvelopeSchema()
provider_list_schema = ProviderListSchema()


def contract_response(body, response_id, provider):
    """A provider's Response as the contract's, stamped with id and provider; BadGateway
    (the provider's fault) if it is malformed.

    Loading is all it takes: it keeps only the contract's fields, each checked and of
    the type the contract gives, so dumping the result again would change nothing
    (test_properties.py checks that it does not).
    """
    try:
        response = response_schema.load(body)
    except ValidationError as exc:
        fields = ", ".join(sorted(exc.messages)) if isinstance(exc.messages, dict) else "body"
        raise BadGateway(
            provider, f"{provider} answered with a malformed Response ({fields})"
        ) from exc
    response.update(id=response_id, object="response", provider=provider)
    return response
