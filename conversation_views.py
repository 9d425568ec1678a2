"""The Conversations API's routes, on app.py's blueprint (so `authenticate` comes first, as
for every /v1 route); conversations.py does the work, store.conversations keeps them.

Another key's conversation, and one that expired or never was, are answered alike: a
404 that names the id, with no more said.
"""

from flask import current_app, g

import conversations
import request_body
from envelope import ApiError, invalid
from items import list_page
from routing import check_id, list_query

ROUTE = "/conversations/<string(minlength=0):conversation_id>"


def add_to(bp):
    """Add the routes to the blueprint."""
    bp.post("/conversations")(create_conversation)
    bp.get(ROUTE)(retrieve_conversation)
    bp.post(ROUTE)(update_conversation)
    bp.delete(ROUTE)(delete_conversation)
    bp.get(f"{ROUTE}/items")(list_items)
    bp.post(f"{ROUTE}/items")(add_items)
    bp.get(f"{ROUTE}/items/<string(minlength=0):item_id>")(retrieve_item)
    bp.delete(f"{ROUTE}/items/<string(minlength=0):item_id>")(delete_item)


def create_conversation():
    """Create a conversation, with `items` to start from and `metadata`, both optional."""
    settings = current_app.extensions["gateway"]
    body = request_body.json_object(settings)
    conversation = conversations.create(settings.store, g.owner, body, settings.conversations)
    return conversations.as_object(conversation)


def retrieve_conversation(conversation_id):
    """A conversation: its id, when it was made, its metadata."""
    return conversations.as_object(held(conversation_id))


def update_conversation(conversation_id):
    """Replace a conversation's metadata."""
    settings, conversation = current_app.extensions["gateway"], held(conversation_id)
    metadata = conversations.checked_metadata(request_body.json_object(settings).get("metadata"))
    updated = settings.store.conversations.update(conversation.id, metadata)
    return conversations.as_object(updated or not_found(conversation_id))


def delete_conversation(conversation_id):
    """Delete a conversation and its items."""
    settings, conversation = current_app.extensions["gateway"], held(conversation_id)
    settings.store.conversations.delete(conversation.id)
    return {"id": conversation.id, "object": "conversation.deleted", "deleted": True}


def list_items(conversation_id):
    """A page of a conversation's items (limit, order, after; include is taken, and there
    is nothing more to include: items are kept whole)."""
    settings, query = current_app.extensions["gateway"], list_query()
    found = conversations.page(settings.store, held(conversation_id), **query)
    if found is None:
        raise invalid(f"no item {query['after']!r} in this conversation", "after")
    return found


def add_items(conversation_id):
    """Add items to a conversation's end; answer them as kept, with their ids."""
    settings, conversation = current_app.extensions["gateway"], held(conversation_id)
    body = request_body.json_object(settings)
    added = conversations.add(settings.store, conversation, body, settings.conversations)
    return list_page(added or not_found(conversation_id), False)


def retrieve_item(conversation_id, item_id):
    """One item of a conversation."""
    store, conversation = current_app.extensions["gateway"].store, held(conversation_id)
    return store.conversations.item(conversation.id, item_id) or item_not_found(item_id)


def delete_item(conversation_id, item_id):
    """Delete one item of a conversation; answer the conversation, as OpenAI does."""
    store, conversation = current_app.extensions["gateway"].store, held(conversation_id)
    left = store.conversations.delete_item(conversation.id, item_id)
    return conversations.as_object(left or item_not_found(item_id))


def held(conversation_id):
    """The caller's conversation by that id, or a 404."""
    check_id(conversation_id, "conversation id")
    store = current_app.extensions["gateway"].store
    return conversations.visible(store, conversation_id, g.owner) or not_found(conversation_id)


def not_found(conversation_id):
    raise conversations.Unknown(conversation_id)


def item_not_found(item_id):
    raise ApiError(404, "not_found_error", f"item {item_id!r} was not found in this conversation")
