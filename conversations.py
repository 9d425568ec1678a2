"""Conversations the gateway keeps, at every provider: OpenAI's Conversations API, and a
create's `conversation`. Nothing here knows Flask.

A conversation is a list of items kept in the store (store.conversations), seen only
by the key that made it. A create that names one is sent the conversation's items
before its own input, whatever its provider (one with a Responses API too: the
conversation lives here, not there), and its turn (its own input items, then its
output) is appended when its response ends, once, as one block: conversation items
are in the order the responses ending them reached the store. How a response ends
decides what it appends:

    completed, incomplete   its input and its output
    cancelled               its input and the output it had
    failed                  nothing: the turn did not happen, and may be sent again

A turn is kept with the response's input (store.keep_input, with the conversation)
until its end is seen: at the create (answered whole, or streamed), at a gateway run's
end, or, for a background response its provider runs, at a retrieve or cancel that
finds it ended.
"""

import secrets
from typing import NamedTuple

from chains import as_list, bare
from items import as_items, list_page
from owners import sees, stored_as

APPENDS = frozenset({"completed", "incomplete", "cancelled"})  # what a turn's end appends
ROLES = frozenset({"user", "assistant", "system", "developer"})
METADATA_KEYS, METADATA_KEY_CHARS, METADATA_VALUE_CHARS = 16, 64, 512  # as OpenAI bounds it


class Invalid(Exception):
    """Input a conversation cannot take; `param` names it. The client gets a 400."""

    def __init__(self, message, param):
        super().__init__(message)
        self.message, self.param = message, param


class Unknown(Exception):
    """A conversation the caller cannot see: none by that id, or another key's (a 404)."""

    def __init__(self, conversation_id):
        super().__init__(f"conversation {conversation_id!r} was not found")
        self.message = str(self)


class Limits(NamedTuple):
    """How much a conversation holds, and one request may add (Settings)."""

    items: int  # MAX_CONVERSATION_ITEMS
    per_add: int  # MAX_ITEMS_PER_ADD


def new_id():
    """An id in OpenAI's form: conv_ and 48 hex digits."""
    return f"conv_{secrets.token_hex(24)}"


def visible(store, conversation_id, owner):
    """The caller's conversation, or None (unknown, expired, another key's: all alike)."""
    if not isinstance(conversation_id, str) or not conversation_id:
        return None
    found = store.conversations.get(conversation_id)
    return found if found is not None and sees(owner, found.owner) else None


def create(store, owner, body, limits):
    """A new conversation from a create's body ({items, metadata}, both optional)."""
    items = checked_items(body.get("items", []), "items", limits.per_add)
    metadata = checked_metadata(body.get("metadata"))
    return store.conversations.create(new_id(), stored_as(owner), metadata, items)


def add(store, conversation, body, limits):
    """The items a body ({items}) adds to a conversation, as kept."""
    items = checked_items(body.get("items"), "items", limits.per_add)
    if not items:
        raise Invalid("items must hold at least one item", "items")
    return store.conversations.add(conversation.id, items, limits.items)


def as_object(conversation):
    """The conversation in OpenAI's shape."""
    return {"id": conversation.id, "object": "conversation",
            "created_at": int(conversation.created_at), "metadata": conversation.metadata}


def page(store, conversation, limit, order, after):
    """A page of a conversation's items in OpenAI's list shape; None if `after` names none."""
    found = store.conversations.items(conversation.id, limit, order, after)
    return None if found is None else list_page(*found)


def follows(store, body, owner, limits):
    """The create body to send for a create that names a conversation (as an id or as
    {"id": ...}): its items, then the create's own input. Also the conversation's id,
    None if it names none. Raises Invalid (a 400), or Unknown (a 404)."""
    named = body.get("conversation")
    if named is None:
        return body, None
    if body.get("previous_response_id") is not None:
        raise Invalid("conversation and previous_response_id cannot be used together: "
                      "a response continues one or the other", "conversation")
    conversation_id = named.get("id") if isinstance(named, dict) else named
    if not isinstance(conversation_id, str) or not conversation_id:
        raise Invalid("conversation must be a conversation id, or {\"id\": ...}", "conversation")
    conversation = visible(store, conversation_id, owner)
    if conversation is None:
        raise Unknown(conversation_id)
    own = as_list(body.get("input"))
    if conversation.count + len(own) + 1 > limits.items:  # room for its output too
        raise Invalid(f"conversation {conversation_id!r} holds {conversation.count} items, at "
                      f"most {limits.items}: this create would take it past that",
                      "conversation")
    earlier, _ = store.conversations.items(conversation_id, None, "asc")
    rest = {k: v for k, v in body.items() if k != "conversation"}
    return {**rest, "input": [bare(item) for item in earlier] + own}, conversation_id


def turn_ended(store, response_id, response, kept=None):
    """Append a response's turn to its conversation if it ended as one that appends
    (APPENDS); `kept` is its kept input (store.keep_input), read if not given. Once per
    response, whoever sees it end (the store sees to that)."""
    if response.get("status") not in APPENDS:
        return
    kept = kept if kept is not None else store.input_items(response_id)
    if kept is None or not kept.conversation:
        return
    output = [item for item in response.get("output") or [] if isinstance(item, dict)]
    store.conversations.append_turn(kept.conversation, response_id, [*kept.items, *output])


def checked_items(value, param, most):
    """Items a client sent, in the shapes the gateway keeps (items.as_items): a list of at
    most `most` objects, messages with a role and content. Raises Invalid naming it."""
    if not isinstance(value, list):
        raise Invalid(f"{param} must be a list of items", param)
    if len(value) > most:
        raise Invalid(f"{param} may hold at most {most} items at a time", param)
    for i, item in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(item, dict):
            raise Invalid(f"{where} must be an object", where)
        if not isinstance(item.get("type", "message"), str):
            raise Invalid(f"{where}.type must be a string", f"{where}.type")
        if item.get("type", "message") == "message":
            if item.get("role") not in ROLES:
                raise Invalid(f"{where}.role must be one of {', '.join(sorted(ROLES))}",
                              f"{where}.role")
            if not isinstance(item.get("content"), (str, list)):
                raise Invalid(f"{where}.content must be a string or a list of parts",
                              f"{where}.content")
    return [_stored(item) for item in as_items(value)]


def checked_metadata(value):
    """Metadata as OpenAI takes it: at most 16 string keys of 64 characters, each with a
    string value of 512. Raises Invalid naming it."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > METADATA_KEYS or not all(
            isinstance(k, str) and len(k) <= METADATA_KEY_CHARS and isinstance(v, str)
            and len(v) <= METADATA_VALUE_CHARS for k, v in value.items()):
        raise Invalid(f"metadata must be an object of at most {METADATA_KEYS} string values "
                      f"({METADATA_VALUE_CHARS} characters) under string keys "
                      f"({METADATA_KEY_CHARS})", "metadata")
    return value


def _stored(item):
    """An item as a conversation holds it: a new id of its own (OpenAI gives added items
    theirs), and a message's status."""
    item = {**item, "id": None}
    if item["type"] == "message":
        item.setdefault("status", "completed")
    return item
