"""Routing policy: which provider a call goes to, and what the store says about an id.

The views in app.py call these in order: provider_hint (what the client
asked), held (the id checked, and what the store holds of it that this caller
may see: lookup, then visible), candidates (which providers to ask),
first_success (ask them in order; a 404 moves on) and remember (tell the store). A create
goes where create_target says. Failures are raised as ApiError or the
providers' own exceptions; envelope.py turns them into the error envelope.
"""

import unicodedata
from contextlib import contextmanager

from flask import current_app, g, request

import conversations
import metrics
from chains import PreviousNotFound
from envelope import ApiError, invalid, unsupported
from items import ORDERS
from owners import sees, stored_as
from providers import PROVIDERS, keeps_nothing, withdraw
from providers.errors import NotFound, ProviderError, Rejected
from providers.translate import carried
from store import DELETED, StoreError

MAX_ID_LENGTH = 256
# How a 501 names each operation a provider lacks.
LACKS = {
    "retrieve": "cannot retrieve a response natively",
    "cancel": "has no native cancel for responses, and the gateway cancels only the "
              "background responses it runs itself",
    "delete": "keeps no responses to delete; the gateway deletes only those it stored",
    "input_items": "keeps no input items; the gateway lists only those it stored",
    "resume": "runs no background responses to stream again; the gateway streams again "
              "only those it runs itself",
    "input_tokens": "has no API that counts a response's input tokens, and the gateway "
                    "does not estimate a count",
    "compact": "has no API that compacts a conversation (compacted items are opaque: only "
               "the provider that made them can read them)",
}


def keep_input(store, response_id, kept):
    """Keep a create's input items (a store.Kept) where its provider keeps none, or where its
    response is a turn of a conversation; a store that is down costs only the list (and
    the chain)."""
    if kept.items is None:
        return
    try:
        store.keep_input(response_id, kept.items, kept.previous, kept.conversation)
    except StoreError as exc:
        metrics.count_store_error("keep_input")
        current_app.logger.warning("request %s: the input of %s was not stored: %s",
                                   g.request_id, response_id, exc)


def ended(store, response, kept=None):
    """Append a response to its conversation if it is a turn of one that has just been seen
    to end (conversations.turn_ended); answer the response. A store that is down leaves
    the turn to the next time the response is seen ended (it is appended once)."""
    try:
        conversations.turn_ended(store, response["id"], response, kept)
    except StoreError as exc:
        metrics.count_store_error("conversation")
        current_app.logger.warning("request %s: response %s was not added to its "
                                   "conversation yet: %s", g.request_id, response["id"], exc)
    return response


def watch(settings, response_id, provider, gateway_run):
    """Have a background response watched until it ends, for its webhook (webhooks.py), if
    webhooks are set; a store that is down costs the webhook (logged)."""
    if settings.notifier is None:
        return
    try:
        settings.notifier.watch(response_id, provider, gateway_run)
    except StoreError as exc:
        metrics.count_store_error("watch")
        current_app.logger.warning("request %s: background response %s is not watched, so "
                                   "its webhook will not be sent: %s", g.request_id,
                                   response_id, exc)


def check_id(value, what="response id"):
    """Refuse an id that could not travel upstream as one clean path segment."""
    if not value:
        problem = "must not be empty"
    elif len(value) > MAX_ID_LENGTH:
        problem = f"must be at most {MAX_ID_LENGTH} characters"
    elif any(c.isspace() or unicodedata.category(c) == "Cc" for c in value):
        problem = "must not contain whitespace or control characters"
    elif value in (".", ".."):
        problem = "must not be '.' or '..'"  # URL libraries resolve these as directories
    else:
        return
    raise invalid(f"{what} {problem}", "id")


def list_query():
    """limit (1 to 100, 20 by default), order (asc or desc, desc by default) and after."""
    raw, order = request.args.get("limit", "20"), request.args.get("order", "desc")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise invalid("limit must be a whole number from 1 to 100", "limit")
    if order not in ORDERS:
        raise invalid("order must be 'asc' or 'desc'", "order")
    return {"limit": int(raw), "order": order, "after": request.args.get("after")}


def provider_hint():
    """The provider ?provider= names (lower-cased), None if absent; 400 if unknown."""
    hint = request.args.get("provider")
    if hint is None:
        return None
    name = hint.strip().lower()
    if name not in PROVIDERS:
        known = ", ".join(PROVIDERS)
        raise invalid(f"unknown provider {hint[:64]!r}; known providers: {known}", "provider")
    return name


def create_target(settings, body, hint, operation="create"):
    """The provider a create (or another operation on a create's body) goes to, and the
    body to send it (model prefix stripped)."""
    model = body.get("model")
    prefix, slash, rest = model.partition("/") if isinstance(model, str) else ("", "", "")
    prefix = prefix.strip().lower()
    if hint:  # the model is the provider's own name for it, unless it repeats the hint
        body = {**body, "model": rest} if prefix == hint and rest else body
        return configured(settings, operation, hint, "provider"), body
    if not slash or prefix not in PROVIDERS or not rest:
        raise invalid(
            "model must name its provider, as 'provider/model' (e.g. 'openai/gpt-4o-mini'), "
            f"or pass ?provider=; known providers: {', '.join(PROVIDERS)}", "model",
        )
    return configured(settings, operation, prefix, "model"), {**body, "model": rest}


def translatable(settings, upstream, body):
    """The create body to send: as it is to a provider with a Responses API; to a Chat-only
    one, without what asks for nothing the model reads, nor (by HOSTED_TOOLS) hosted
    tools (translate.carried), each named in the answer's X-Gateway-Dropped header."""
    if PROVIDERS[upstream.name].responses_api:
        return body
    body, g.dropped = carried(body, upstream.name, settings.hosted_tools)
    return body


def candidates(settings, operation, hint, stored):
    """The providers to ask, in order: the hint's, else the store's, else every capable one."""
    if stored and not hint and stored.provider in settings.upstreams:
        return [configured(settings, operation, stored.provider, None)]
    return capable(settings, operation, hint)


def capable(settings, operation, hint):
    """The providers a probe for an id would ask: the hint's, else every configured one
    with the operation, in PROVIDERS order (a 501 if there is none)."""
    if hint:
        return [configured(settings, operation, hint, "provider")]
    upstreams = [u for name, u in settings.upstreams.items()
                 if getattr(PROVIDERS[name], operation)]
    if not upstreams:
        raise unsupported(f"no configured provider can {operation} a response natively")
    return upstreams


def configured(settings, operation, name, param):
    """The named provider's Upstream: 501 if it lacks the operation, 400 if not configured."""
    # Capability is a fact of the provider, whether or not it is configured here.
    if getattr(PROVIDERS[name], operation) is None:
        raise unsupported(f"{name} {LACKS[operation]}")
    if name not in settings.upstreams:
        raise invalid(f"provider {name!r} is not configured on this gateway", param)
    return settings.upstreams[name]


def first_success(upstreams, operation, response_id, *more):
    """Run the operation at the first provider that holds the id; a 404 moves on."""
    first_failure = None
    for upstream in upstreams:
        try:
            return upstream.name, call(upstream, operation, response_id, *more)
        except NotFound:
            continue
        except ProviderError as exc:  # call() logged it
            first_failure = first_failure or exc
    if first_failure:
        g.provider = first_failure.provider
        raise first_failure
    g.pop("provider", None)  # nobody holds it: counted as another key's id is (visible)
    raise not_found(response_id, upstreams)


def not_found(response_id, upstreams):
    """The 404 for an id none of these providers holds."""
    asked = ", ".join(u.name for u in upstreams)
    return ApiError(404, "not_found_error", f"response {response_id!r} was not found at {asked}")


def held(settings, operation, response_id, hint):
    """What the store holds of an id, for a call on it: (the entry or None, whether the
    entry answers the call, as it does unless ?provider= names another provider). Checks
    the id first, and refuses another key's or a deleted response (visible), and an id the
    store does not know where probing is off."""
    check_id(response_id)
    stored = visible(settings, operation, hint, lookup(settings.store, response_id), response_id)
    if stored is None and not settings.probe_unknown:
        raise not_found(response_id, capable(settings, operation, hint))
    answers = stored is not None and hint in (None, stored.provider)
    if answers:
        g.provider = stored.provider
    return stored, answers


def visible(settings, operation, hint, stored, response_id):
    """The stored entry, if the caller may see it: 404 once deleted. Another key's
    response is answered as an id nobody holds would be after probing (the same 404,
    or a 501 where no provider could hold it), with no provider call."""
    if stored is None:
        return None
    if not sees(g.owner, stored.owner):
        raise not_found(response_id, capable(settings, operation, hint))
    if stored.status == DELETED:
        raise ApiError(404, "not_found_error", f"response {response_id!r} was deleted")
    return stored


def call(upstream, operation, *arguments):
    """Run one provider operation (provider_call: timed, counted, logged if it fails)."""
    with provider_call(upstream, operation):
        return getattr(PROVIDERS[upstream.name], operation)(upstream, *arguments)


@contextmanager
def provider_call(upstream, operation):
    """Time and count a call to the provider, and log why it failed: the client's envelope
    says what failed, the log also what lay under it. A 404 is no failure: ids are probed."""
    g.provider = upstream.name
    try:
        with metrics.upstream_call(upstream.name):
            yield
    except NotFound:
        raise
    except ProviderError as exc:
        current_app.logger.warning("request %s: %s at %s failed: %s%s", g.request_id,
                                   operation, upstream.name, exc.message, causes(exc))
        raise


def causes(exc):
    """What lay under a failure, by its exceptions' names (" (ConnectionError <
    MaxRetryError < ...)"); not their texts, which may hold a proxy's credentials."""
    names = []
    while (exc := exc.__cause__ or exc.__context__) is not None and len(names) < 8:
        names.append(type(exc).__name__)
    return f" ({' < '.join(names)})" if names else ""


def lookup(store, response_id):
    """The store's entry for an id; None if it has none. A store that cannot be reached
    raises StoreError (a 503) where each key sees only its own responses: who owns the
    id is unknown, so nothing a probe finds may be answered. Where responses are shared,
    the id is routed by hint or probing instead."""
    try:
        entry = store.get(response_id)
    except StoreError as exc:
        metrics.count_store_error("get")
        if g.owner is not None:
            raise
        current_app.logger.warning("request %s: %s; routing %s by hint or probing",
                                   g.request_id, exc, response_id)
        return None
    # A provider this version does not know (a shared Redis, an older or newer gateway): probe.
    return entry if entry and entry.provider in PROVIDERS else None


def remember(store, provider, response):
    """Tell the store, as the caller's; answer what it holds now (a final status is never
    undone). A store that cannot be written raises StoreError (a 503) where each key sees
    only its own responses; where they are shared, the answer goes out unstored."""
    try:
        return store.record(response["id"], provider, response, owner=stored_as(g.owner)).body
    except StoreError as exc:
        metrics.count_store_error("record")
        if g.owner is not None:
            raise
        current_app.logger.warning("request %s: response %s at %s was not stored: %s",
                                   g.request_id, response["id"], provider, exc)
        return response


def keep_created(store, upstream, response):
    """Store a new response as the caller's. One the store cannot take is answered
    unstored where nobody else could reach it (its provider keeps none, or responses
    are shared); otherwise it is withdrawn at its provider and the client gets a 503:
    left there, it would be anyone's who asks for its id."""
    try:
        return remember(store, upstream.name, response)
    except StoreError:
        if keeps_nothing(upstream.name):
            current_app.logger.warning("request %s: response %s at %s was not stored",
                                       g.request_id, response["id"], upstream.name)
            return response
        withdrawn(upstream, response["id"])
        raise


def withdrawn(upstream, response_id):
    """Withdraw a response at its provider (providers.withdraw), logging if it cannot."""
    try:
        withdraw(upstream, response_id)
        current_app.logger.warning("request %s: response %s was withdrawn at %s: the store "
                                   "could not record whose it is", g.request_id, response_id,
                                   upstream.name)
    except ProviderError as exc:
        current_app.logger.error("request %s: response %s at %s could not be recorded nor "
                                 "withdrawn (%s): any key that asks for its id may be given it",
                                 g.request_id, response_id, upstream.name, exc.message)


@contextmanager
def previous_checked(previous):
    """A provider's own 'previous response not found', answered word for word as the
    gateway answers it for an id it holds for another key, with no provider named."""
    try:
        yield
    except (Rejected, NotFound) as exc:
        about_it = (getattr(exc, "code", None) == "previous_response_not_found"
                    or (isinstance(exc, NotFound) and previous in exc.message))
        if previous is None or not about_it:
            raise
        g.pop("provider", None)
        raise PreviousNotFound(previous) from None
