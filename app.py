"""The gateway's HTTP face: authenticate, validate, pick the provider, map failures.

A cancel request reads top to bottom: `authenticate` (every /v1 route),
`cancel_response` (the view), `check_response_id`, `cancel_candidates` (which
providers may hold the id), `cancel_first` (ask them in order), `render_response`
(the contract's shape). Whatever fails on the way, `error_response` turns it
into the OpenAI error envelope. Provider calls live in providers/.
"""

import hmac
import os
import re
import unicodedata
import uuid

from flask import Blueprint, Flask, current_app, g, jsonify, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

import metrics
from config import Settings, key_digest
from openapi import build_spec
from providers import PROVIDERS
from providers.errors import (
    BadGateway,
    GatewayTimeout,
    NotFound,
    ProviderError,
    RateLimited,
    Rejected,
)
from schemas import error_envelope_schema, response_schema

MAX_ID_LENGTH = 256
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # what we will echo and log as is

OPENAPI = build_spec()

bp = Blueprint("api", __name__, url_prefix="/v1")


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


def create_app(test_config=None):
    """Create the gateway; `test_config` is an environment mapping read instead of os.environ."""
    app = Flask(__name__)
    # Keep '//' as it is, so an empty id reaches check_response_id instead of a redirect.
    app.url_map.merge_slashes = False
    settings = Settings.from_env(os.environ if test_config is None else test_config)
    app.extensions["gateway"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length  # for bodies that are read
    if settings.auth_disabled:
        app.logger.warning("GATEWAY_AUTH=disabled: every client may use this gateway")
    app.before_request(assign_request_id)
    app.before_request(refuse_large_body)
    app.after_request(echo_request_id)
    app.after_request(count_request)
    app.register_blueprint(bp)
    app.add_url_rule("/healthz", view_func=healthz)
    app.add_url_rule("/openapi.json", view_func=openapi_json)
    app.add_url_rule("/metrics", view_func=metrics_page)
    # On the app, not the blueprint: unknown URLs and wrong methods never reach a blueprint.
    app.register_error_handler(Exception, error_response)
    return app


def healthz():
    """Say the process is up; touches no provider, needs no key."""
    return {"status": "ok"}


def openapi_json():
    """Serve the OpenAPI document built from the schemas (no key: it holds no secrets)."""
    return OPENAPI


def metrics_page():
    """Serve Prometheus metrics; with METRICS_AUTH=required, only to gateway keys."""
    settings = current_app.extensions["gateway"]
    if settings.metrics_need_key:
        authenticate()
    body, content_type = metrics.render(settings.metrics_dir)
    return body, 200, {"Content-Type": content_type}


def assign_request_id():
    """Adopt the client's X-Request-ID if it is safe to echo and log, else make one."""
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex


def refuse_large_body():
    """Refuse a declared body over the limit, even on routes that never read it."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "invalid_request_error", f"request body is over {limit} bytes")


def echo_request_id(response):
    """Return the request id on every response, errors included, for the access log."""
    response.headers["X-Request-ID"] = g.request_id
    return response


def count_request(response):
    """Count the answer by route, status and the provider that gave it, if any."""
    route = request.url_rule.rule if request.url_rule else "unmatched"
    metrics.count_request(route, response.status_code, g.get("provider", ""))
    return response


@bp.before_request
def authenticate():
    """Refuse the request unless it carries one of the gateway's own keys."""
    settings = current_app.extensions["gateway"]
    if settings.auth_disabled:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("send the gateway key as 'Authorization: Bearer <key>'")
    digest = key_digest(token)
    matched = False
    for known in settings.key_digests:  # every key, every time: no early exit to time
        matched |= hmac.compare_digest(digest, known)
    if not matched:
        raise unauthorized("the API key is not valid for this gateway", code="invalid_api_key")


@bp.post("/responses/<string(minlength=0):response_id>/cancel")
def cancel_response(response_id):
    """Cancel a background response at whichever provider holds it."""
    check_response_id(response_id)
    settings = current_app.extensions["gateway"]
    upstreams = cancel_candidates(settings, request.args.get("provider"))
    provider, body = cancel_first(upstreams, response_id)
    return render_response(provider, body, response_id)


def check_response_id(response_id):
    """Refuse an id that could not travel upstream as one clean path segment."""
    if not response_id:
        problem = "must not be empty"
    elif len(response_id) > MAX_ID_LENGTH:
        problem = f"must be at most {MAX_ID_LENGTH} characters"
    elif any(c.isspace() or unicodedata.category(c) == "Cc" for c in response_id):
        problem = "must not contain whitespace or control characters"
    elif response_id in (".", ".."):
        problem = "must not be '.' or '..'"  # URL libraries resolve these as directories
    else:
        return
    raise ApiError(400, "invalid_request_error", f"response id {problem}", param="id")


def cancel_candidates(settings, hint):
    """The configured providers to ask, in order, honouring a ?provider= hint."""
    if hint is None:
        upstreams = [u for name, u in settings.upstreams.items() if PROVIDERS[name]]
        if not upstreams:
            raise unsupported("no configured provider can cancel a response natively")
        return upstreams
    name = hint.strip().lower()
    if name not in PROVIDERS:
        known = ", ".join(PROVIDERS)
        raise ApiError(
            400, "invalid_request_error",
            f"unknown provider {hint[:64]!r}; known providers: {known}", param="provider",
        )
    # Capability is a fact of the provider, whether or not it is configured here.
    if PROVIDERS[name] is None:
        raise unsupported(f"{name} has no native cancel for responses")
    if name not in settings.upstreams:
        raise ApiError(
            400, "invalid_request_error",
            f"provider {name!r} is not configured on this gateway", param="provider",
        )
    return [settings.upstreams[name]]


def cancel_first(upstreams, response_id):
    """Cancel at the first provider that holds the id; a 404 moves on to the next."""
    first_failure = None
    for upstream in upstreams:
        try:
            with metrics.upstream_call(upstream.name):
                body = PROVIDERS[upstream.name](upstream, response_id)
            g.provider = upstream.name
            return upstream.name, body
        except NotFound:
            continue
        except ProviderError as exc:
            current_app.logger.warning(
                "request %s: cancel at %s failed: %s", g.request_id, upstream.name, exc.message
            )
            first_failure = first_failure or exc
    if first_failure:
        g.provider = first_failure.provider
        raise first_failure
    asked = ", ".join(u.name for u in upstreams)
    raise ApiError(404, "not_found_error", f"response {response_id!r} was not found at {asked}")


def render_response(provider, body, response_id):
    """Reshape the provider's Response into the contract's, stamped with id and provider."""
    try:
        response = response_schema.load(body)
    except ValidationError as exc:
        fields = ", ".join(sorted(exc.messages)) if isinstance(exc.messages, dict) else "body"
        raise BadGateway(
            provider, f"{provider} answered with a malformed Response ({fields})"
        ) from exc
    response.update(id=response_id, object="response", provider=provider)
    return response_schema.dump(response)


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
    """Turn any failure into the OpenAI error envelope: the one place that does."""
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
