"""The gateway's HTTP face: authenticate, validate, pick the provider, answer.

A request reads top to bottom: `authenticate` (every /v1 route), then the view
(`create_response`, `retrieve_response`, `cancel_response`, `delete_response`,
`list_input_items`). A create's body is read within bounds (request_body.py);
each view calls the routing steps of routing.py in order:
`held` (what the store holds of an id, and whether this key may see it),
`candidates` (which providers to ask), `first_success` (ask them in order),
then `contract_response` (the contract's Response, from schemas.py) and
`remember` (tell the store). A background response at a provider without
native cancel is run by the gateway itself: the views hand it to the runner
(background.py) and read it from the store. A create that follows another
response is rebuilt where needed (chains.py). Whatever fails on the way,
envelope.py turns into the OpenAI error envelope. A create with stream: true
is answered with server-sent events (streams.py). Provider calls live in
providers/, the response store in store/.
"""

import hmac
import os
import re
import threading
import uuid

from flask import Blueprint, Flask, Response, current_app, g, request
from marshmallow import ValidationError

import request_body
import chains
import conversation_views
import conversations
import metrics
import streams
from config import Settings, key_digest
from envelope import error_response, invalid, unauthorized
from items import as_items, page
from openapi import build_spec
from providers import PROVIDERS, keeps_nothing
from providers.errors import BadGateway
from routing import (
    call, candidates, create_target, ended, first_success, held, keep_created, keep_input,
    list_query, previous_checked, provider_call, provider_hint, remember, translatable, watch,
)
from schemas import contract_response, deleted_schema, input_item_list_schema, provider_list_schema
from store import Kept, tombstone

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # what we will echo and log as is

OPENAPI = build_spec()

bp = Blueprint("api", __name__, url_prefix="/v1")
conversation_views.add_to(bp)


def create_app(test_config=None):
    """Create the gateway; `test_config` is an environment mapping read instead of os.environ."""
    app = Flask(__name__)
    # Keep '//' as it is, so an empty id reaches check_id instead of a redirect.
    app.url_map.merge_slashes = False
    settings = Settings.from_env(os.environ if test_config is None else test_config)
    app.extensions["gateway"] = settings
    if settings.auth_disabled:
        app.logger.warning("GATEWAY_AUTH=disabled: every client may use this gateway")
    if settings.unkeyed_owners:
        app.logger.warning("GATEWAY_SECRET is not set and %s keeps no secret of its own: "
                           "owner ids are unkeyed digests of the keys; set GATEWAY_SECRET, "
                           "the same on every host", settings.store)
    app.logger.info("response store: %s", settings.store)
    app.before_request(assign_request_id)
    app.before_request(refuse_large_body)
    app.after_request(echo_request_id)
    app.after_request(say_dropped)
    app.after_request(count_request)
    app.teardown_request(request_body.give_back)
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
    request_body.refuse_declared(current_app.extensions["gateway"].max_content_length)


def echo_request_id(response):
    """Return the request id on every response, errors included, for the access log."""
    response.headers["X-Request-ID"] = g.request_id
    return response


def say_dropped(response):
    """Name what a Chat-only provider was not sent (routing.translatable), so it is not
    dropped silently."""
    if g.get("dropped"):
        response.headers["X-Gateway-Dropped"] = ", ".join(g.dropped)
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
    g.owner = None  # whose responses the caller sees; None: everyone's
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
    g.owner = settings.owners.get(digest)


@bp.get("/providers")
def list_providers():
    """List every provider the gateway knows: configured here or not, and what it can do."""
    settings = current_app.extensions["gateway"]
    data = [
        {"id": name, "object": "provider", "configured": name in settings.upstreams,
         "responses_api": ops.responses_api, "native_cancel": ops.cancel is not None,
         "cancel": "native" if ops.cancel else "gateway"}
        for name, ops in PROVIDERS.items()
    ]
    return provider_list_schema.dump({"object": "list", "data": data})


@bp.post("/responses")
def create_response():
    """Create a response at the provider that `model` ("provider/model") or ?provider= names."""
    settings = current_app.extensions["gateway"]
    body = request_body.json_object(settings)
    if not isinstance(body.get("stream"), (bool, type(None))):  # not `in (True, False)`: 1 == True
        raise invalid("stream must be true or false", "stream")
    stored = body.get("store") is not False  # store: false keeps nothing, input nor output
    for kept_in in ("background", "conversation"):
        if body.get(kept_in) not in (None, False) and not stored:
            raise invalid(f"{kept_in} responses are stored: {kept_in} cannot be sent with "
                          "store: false", "store")
    upstream, body = create_target(settings, body, provider_hint())
    gateway_run = body.get("background") is True and PROVIDERS[upstream.name].cancel is None
    own_input = body.get("input")  # this turn's input, before a conversation or a chain
    body, previous, conversation = continued(settings, upstream, body)
    body = translatable(settings, upstream, body)
    keeps = stored and (gateway_run or keeps_nothing(upstream.name) or conversation)
    kept = Kept(as_items(own_input) if keeps else None, previous, conversation)
    if body.get("stream") is True:
        return stream_create(settings, upstream, body, gateway_run, kept, stored)
    if gateway_run:
        return start_run(settings, upstream, body, kept).body
    with previous_checked(previous):
        created = call(upstream, "create", body)
    response_id = created.get("id")
    if not isinstance(response_id, str) or not response_id:
        raise BadGateway(upstream.name, f"{upstream.name} created a response but sent no id")
    response = contract_response(created, response_id, upstream.name)
    if not stored:
        return response
    response = keep_created(settings.store, upstream, response)
    keep_input(settings.store, response_id, kept)
    ended(settings.store, response, kept)  # a turn of its conversation, if it has ended
    if body.get("background") is True:
        watch(settings, response_id, upstream.name, gateway_run=False)
    return response


def continued(settings, upstream, body):
    """A create body with what it continues expanded for its provider: a conversation's
    items, then a chain of responses. Also the previous response's id and the
    conversation's, each None where it names none."""
    body, conversation = conversations.follows(settings.store, body, g.owner,
                                               settings.conversations)
    try:
        body, previous = chains.follows(settings.store, body, upstream.name, keeps_nothing,
                                        g.owner, settings.probe_unknown)
    except ValueError as exc:
        raise invalid(str(exc), "previous_response_id") from None
    return body, previous, conversation


# Static routes win over /responses/<id>, for POST alone: GET /responses/compact is an id.
@bp.post("/responses/input_tokens")
def count_input_tokens():
    """Count a create body's input tokens at its provider, where it has an API that does."""
    upstream, counted = on_create_body("input_tokens")
    counted = counted.get("input_tokens")
    if not isinstance(counted, int) or isinstance(counted, bool) or counted < 0:
        raise BadGateway(upstream.name, f"{upstream.name} answered a count without one")
    return {"object": "response.input_tokens", "input_tokens": counted}


@bp.post("/responses/compact")
def compact_response():
    """Compact a conversation at its provider, where it has an API that does."""
    return on_create_body("compact")[1]


def on_create_body(operation):
    """Run `operation` on a create's body at the provider it names, with what the body
    continues expanded as for a create; answer the provider and its answer."""
    settings = current_app.extensions["gateway"]
    body = request_body.json_object(settings)
    upstream, body = create_target(settings, body, provider_hint(), operation)
    body, previous, _ = continued(settings, upstream, body)
    with previous_checked(previous):
        return upstream, call(upstream, operation, body)


@bp.get("/responses/<string(minlength=0):response_id>")
def retrieve_response(response_id):
    """Fetch a response's current state from the provider that holds it."""
    settings = current_app.extensions["gateway"]
    hint, after = provider_hint(), stream_again()
    operation = "retrieve" if after is None else "resume"
    stored, here = held(settings, operation, response_id, hint)
    if after is not None:
        return resume_stream(settings, response_id, hint, stored, here, after)
    if here:
        if stored.gateway_run:
            return settings.runner.settle(response_id, stored).body
        if keeps_nothing(stored.provider):
            return stored.body  # its provider keeps nothing to refresh it from
    upstreams = candidates(settings, "retrieve", hint, stored)
    provider, body = first_success(upstreams, "retrieve", response_id)
    return answered(settings, provider, response_id, body, stored)


@bp.post("/responses/<string(minlength=0):response_id>/cancel")
def cancel_response(response_id):
    """Cancel a background response at whichever provider holds it."""
    settings, hint = current_app.extensions["gateway"], provider_hint()
    stored, here = held(settings, "cancel", response_id, hint)
    if here:
        if stored.gateway_run:
            return cancel_run(settings, response_id, stored)
        if stored.status == "cancelled":
            return stored.body  # as OpenAI answers a repeat cancel, without asking again
    upstreams = candidates(settings, "cancel", hint, stored)
    provider, body = first_success(upstreams, "cancel", response_id)
    return answered(settings, provider, response_id, body, stored)


@bp.delete("/responses/<string(minlength=0):response_id>")
def delete_response(response_id):
    """Delete a response: at its provider where that keeps responses, and in the store."""
    settings, hint = current_app.extensions["gateway"], provider_hint()
    stored, here = held(settings, "delete", response_id, hint)
    if here:
        if stored.gateway_run:
            settings.runner.delete(response_id, stored)  # stopped first, wherever it runs
            return deleted(response_id)
        if PROVIDERS[stored.provider].delete is None:
            settings.store.record(response_id, stored.provider, tombstone(response_id))
            return deleted(response_id)
    upstreams = candidates(settings, "delete", hint, stored)
    provider, _ = first_success(upstreams, "delete", response_id)
    remember(settings.store, provider, tombstone(response_id))
    return deleted(response_id)


@bp.get("/responses/<string(minlength=0):response_id>/input_items")
def list_input_items(response_id):
    """List a response's input items: from the store where it kept them, else its provider's."""
    settings, hint, query = current_app.extensions["gateway"], provider_hint(), list_query()
    stored, here = held(settings, "input_items", response_id, hint)
    if here:
        if stored.gateway_run or keeps_nothing(stored.provider):
            kept = settings.store.input_items(response_id)
            found = page(kept.items if kept else [], **query)
            if found is None:
                raise invalid(f"no input item {query['after']!r} in this response", "after")
            return input_item_list_schema.dump(found)
    upstreams = candidates(settings, "input_items", hint, stored)
    provider, body = first_success(upstreams, "input_items", response_id, query)
    try:
        return input_item_list_schema.dump(input_item_list_schema.load(body))
    except ValidationError as exc:
        raise BadGateway(provider, f"{provider} answered with a malformed list") from exc


def answered(settings, provider, response_id, body, stored):
    """A provider's Response to a retrieve or a cancel, as the contract's, told to the store
    (and, if it is a turn of a conversation that has ended, appended to it)."""
    response = contract_response(body, response_id, provider)
    response = remember(settings.store, provider, response)
    # A turn of a conversation is stored as it is created: an id the store did not hold
    # is none (and asking the store again would cost every probed id a read).
    return ended(settings.store, response) if stored else response


def deleted(response_id):
    """The answer to a delete, in OpenAI's shape."""
    return deleted_schema.dump({"id": response_id, "object": "response", "deleted": True})


def stream_again():
    """With ?stream=true, the sequence number to stream after (starting_after; -1 for
    every event); None for the Response as JSON."""
    stream = request.args.get("stream", "false")
    if stream not in ("true", "false"):
        raise invalid("stream must be true or false", "stream")
    after = request.args.get("starting_after", "-1")
    if not (after.isdigit() or after == "-1"):
        raise invalid("starting_after must be a sequence number", "starting_after")
    return int(after) if stream == "true" else None


def resume_stream(settings, response_id, hint, stored, here, after):
    """Stream a background response again: its events after `after`, then the rest live,
    from the gateway's record of its own runs, or from the provider that runs it."""
    if here:
        if stored.gateway_run:
            stopped = threading.Event()  # the client left: stop reading the run's events
            return event_stream(streams.following(settings.runner, response_id, after, stopped),
                                stopped.set)
        if PROVIDERS[stored.provider].resume is None:  # so nothing it holds ran in background
            raise invalid(f"response {response_id!r} is not a background response, so it "
                          "cannot be streamed again", "stream")
    upstreams = candidates(settings, "resume", hint, stored)
    provider, generation = first_success(upstreams, "resume", response_id, after)
    source = streams.passthrough(generation, provider, settings.store, g.owner)
    return event_stream(source, generation.close)


def event_stream(source, stop):
    """A streamed answer: `source`'s events as server-sent events (streams.sse)."""
    return Response(streams.sse(source, stop), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def stream_create(settings, upstream, body, gateway_run, kept, stored):
    """Answer a create with server-sent events (streams.py); a refusal is still an envelope.
    `kept` is what to keep of its input (a store.Kept); `stored` False keeps nothing."""
    g.provider = upstream.name
    if gateway_run:  # the client follows the run; the run goes on if the client leaves
        stopped = threading.Event()
        entry = start_run(settings, upstream, body, kept)
        source = streams.following(settings.runner, entry.body["id"], -1, stopped)
        stop = stopped.set
    else:
        generation = PROVIDERS[upstream.name].stream(upstream, body)  # refused fields: 400 now
        with provider_call(upstream, "stream"), previous_checked(kept.previous):
            generation.open()  # the provider's refusal: an envelope, before the first byte
        store = settings.store if stored else None
        if PROVIDERS[upstream.name].responses_api:
            source = streams.passthrough(generation, upstream.name, store, g.owner, kept,
                                         created=True)
        else:
            source = streams.translated(generation, upstream.name, store, g.owner, kept)
        if body.get("background") is True and settings.notifier:  # its provider runs it
            source = settings.notifier.watching(source, upstream.name)
        stop = generation.close
    return event_stream(source, stop)


def start_run(settings, upstream, body, kept):
    """Hand a background response to the runner: no native cancel, so the gateway runs it.
    `kept` is what to keep of its input once the provider accepts it (a store.Kept)."""
    g.provider = upstream.name
    foreground = {k: v for k, v in body.items() if k != "background"}  # upstream, it streams
    generation = PROVIDERS[upstream.name].stream(upstream, foreground)  # refused fields: 400 now
    entry = settings.runner.submit(upstream.name, generation, g.owner, kept)
    watch(settings, generation.response_id, upstream.name, gateway_run=True)
    return entry


def cancel_run(settings, response_id, stored):
    """Cancel a response the gateway runs; one already finished stays as it is (400)."""
    entry = settings.runner.cancel(response_id, stored)
    if entry.status != "cancelled":
        raise invalid(f"Cannot cancel a {entry.status} response.")  # OpenAI's words
    return ended(settings.store, entry.body)  # its turn is in its conversation as it answers
