"""A create's input as the Responses API's input items, and pages of them.

Where a provider keeps no input (stateless and Chat-only providers, and the
gateway's own runs), the store keeps each create's input as items with ids,
which GET /v1/responses/{id}/input_items lists as OpenAI does: a string input
is one user message with one input_text part. Nothing here knows Flask.
"""

import secrets

ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}
ORDERS = ("asc", "desc")


def as_items(value):
    """The `input` of a create as a list of items, each with an id: one random part for
    the create, and the item's place in it (a random id each cost a system call)."""
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    items, create = [], secrets.token_hex(12)
    for place, item in enumerate(value if isinstance(value, list) else []):
        if not isinstance(item, dict):
            continue
        item = dict(item)
        kind = item.setdefault("type", "message")  # {"role", "content"} alone is a message
        if kind == "message" and isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": part, "text": item["content"]}]
        item.setdefault("id", f"{ID_PREFIXES.get(kind, 'item')}_{create}{place:08x}")
        items.append(item)
    return items


def fresh_id(kind):
    """A new random item id, prefixed as OpenAI prefixes items of its kind."""
    return f"{ID_PREFIXES.get(kind, 'item')}_{secrets.token_hex(24)}"


def page(items, limit, order, after=None):
    """One page of the items in OpenAI's list shape; None if `after` names none of them."""
    ordered = items if order == "asc" else items[::-1]
    if after is not None:
        ids = [item.get("id") for item in ordered]
        if after not in ids:
            return None
        ordered = ordered[ids.index(after) + 1:]
    return list_page(ordered[:limit], len(ordered) > limit)


def list_page(data, more):
    """Items in OpenAI's list shape, with the ids a client pages on."""
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": more}
