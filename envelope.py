"""Every failure, in the OpenAI error envelope: the one place that builds it.

Views raise ApiError for what the gateway itself refuses; providers raise the
plain exceptions of providers/errors.py; Werkzeug raises its HTTPExceptions
(unknown URL, wrong method, body too large). error_response, registered on the
app for every Exception, turns each into {"error": {type, message, param, code}}.
"""

from flask import current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

import conversations
from chains import PreviousNotFound
from providers.errors import (
    BadGateway, GatewayTimeout, NotFound, RateLimited, Rejected, Untranslatable,
)
from schemas import error_envelope_schema
from store import ConversationFull, StoreError


class ApiError(Exception):
    """A failure the gateway itself detects, already in the envelope's terms."""

    def __init__(self, status, type, message, param=None, code=None, headers=None):
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}


def invalid(message, param=None):
    """A 400 for a request the gateway refuses as sent."""
    return ApiError(400, "invalid_request_error", message, param=param)


def unauthorized(message, code=None):
    """A 401 that tells the client which scheme to use."""
    return ApiError(
        401, "authentication_error", message, code=code, headers={"WWW-Authenticate": "Bearer"}
    )


def unsupported(message):
    """A 501 the official SDK will not retry (it retries any 5xx unless told not to)."""
    return ApiError(
        501, "invalid_request_error", message,
        code="unsupported_response_operation", headers={"x-should-retry": "false"},
    )


def error_response(exc):
    """Turn any failure into the OpenAI error envelope."""
    error = as_api_error(exc)
    body = error_envelope_schema.dump({"error": {
        "type": error.type, "message": error.message, "param": error.param, "code": error.code,
    }})
    response = jsonify(body)
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def as_api_error(exc):
    """Say what a failure means to the client, as status, type, message and headers."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, HTTPException):
        return http_error(exc)
    if isinstance(exc, StoreError):  # only where the request cannot do without the store
        current_app.logger.warning("request %s: %s", g.get("request_id"), exc)
        return ApiError(503, "provider_error", "the response store could not be reached; "
                        "try again", code="store_unavailable", headers={"Retry-After": "1"})
    if isinstance(exc, (Untranslatable, conversations.Invalid)):
        return invalid(exc.message, exc.param)
    if isinstance(exc, ConversationFull):
        return invalid(str(exc), "items")
    if isinstance(exc, conversations.Unknown):
        return ApiError(404, "not_found_error", exc.message)
    if isinstance(exc, PreviousNotFound):  # as OpenAI answers it
        return ApiError(400, "invalid_request_error", exc.message, "previous_response_id",
                        "previous_response_not_found")
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found_error", exc.message)
    if isinstance(exc, Rejected):
        return ApiError(exc.status, "invalid_request_error", exc.message, exc.param, exc.code)
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": exc.retry_after} if exc.retry_after else {}
        return ApiError(429, "rate_limit_error", exc.message, headers=headers)
    if isinstance(exc, GatewayTimeout):
        return ApiError(504, "provider_error", exc.message, code="upstream_timeout")
    if isinstance(exc, BadGateway):
        return ApiError(502, "provider_error", exc.message, code="upstream_error")
    current_app.logger.exception("request %s: unexpected error", g.get("request_id"))
    return ApiError(500, "provider_error", "the gateway failed unexpectedly", code="internal_error")


def http_error(exc):
    """Werkzeug's own errors (unknown URL, wrong method, ...) in envelope terms."""
    if exc.code == 404:
        message = f"no such endpoint: {request.method} {request.path}"
    elif exc.code == 405:
        message = f"{request.method} is not allowed on {request.path}"
    else:
        message = exc.description or exc.name
    kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}
    default = "invalid_request_error" if (exc.code or 500) < 500 else "provider_error"
    # Keep Allow, WWW-Authenticate, Retry-After...; the HTML content type goes.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    return ApiError(exc.code or 500, kind.get(exc.code, default), message, headers=headers)
