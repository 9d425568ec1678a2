"""previous_response_id where the provider cannot follow it: the conversation rebuilt.

A provider that keeps responses (OpenAI, Azure, xAI, ...) chains natively: the
create is forwarded with previous_response_id, and it finds the earlier turns
itself. A provider that keeps none (stateless and Chat-only ones), or a
previous response only the store holds (a gateway run, a translated one), has
nothing to find them in; the store has. rebuild() walks the chain back through
the store (each turn's input items, as keep_input kept them, and its output)
and sends the whole conversation as the input, oldest turn first. Nothing here
knows Flask.
"""

from owners import sees
from store import DELETED

MAX_TURNS = 1000  # a chain longer than this is taken for a loop
# Item fields that name the item in the store, not what the model is to read.
STORE_FIELDS = ("id", "status")


class PreviousNotFound(Exception):
    """The previous response is unknown, was not stored, or belongs to another key."""

    def __init__(self, response_id):
        super().__init__(f"Previous response with id '{response_id}' not found.")  # OpenAI's
        self.message = str(self)


def follows(store, body, provider, keeps_nothing, owner, forward_unknown=True):
    """The create body to send `provider` for a create that may follow another response,
    and the previous id to keep with its input (None if it follows none).

    `keeps_nothing(name)` says whether a provider keeps no responses; `owner` is the
    caller (owners.py). A previous id the store does not know is forwarded to a provider
    that keeps responses, unless `forward_unknown` is False. Raises PreviousNotFound, or
    ValueError if the previous response lives at another provider.
    """
    previous = body.get("previous_response_id")
    if previous is None:
        return body, None
    if not isinstance(previous, str) or not previous:
        raise PreviousNotFound(previous)
    entry = store.get(previous)
    if entry is not None and _hidden(entry, owner):
        raise PreviousNotFound(previous)  # as if it did not exist: nothing about it leaks
    held_here = entry is not None and (entry.gateway_run or keeps_nothing(entry.provider))
    if not held_here and not keeps_nothing(provider) and (entry is not None or forward_unknown):
        return body, previous  # the provider holds the chain (or says it does not)
    if entry is None:
        raise PreviousNotFound(previous)
    if entry.provider != provider:
        raise ValueError(f"previous response {previous!r} is held at {entry.provider}, not "
                         f"{provider}: continue the conversation there")
    earlier = rebuild(store, previous, owner, entry)
    rest = {k: v for k, v in body.items() if k != "previous_response_id"}
    return {**rest, "input": earlier + as_list(body.get("input"))}, previous


def rebuild(store, response_id, owner, entry=None):
    """Every turn of the conversation up to `response_id` (whose entry the caller may have
    read already), oldest first: each turn's input items, then its output items."""
    turns, seen = [], set()
    while response_id is not None:
        if response_id in seen or len(seen) >= MAX_TURNS:
            raise PreviousNotFound(response_id)
        seen.add(response_id)
        entry = entry or store.get(response_id)
        kept = store.input_items(response_id)
        if entry is None or kept is None or _hidden(entry, owner):
            raise PreviousNotFound(response_id)  # not stored (store: false), or gone
        turns.append([*kept.items, *(entry.body.get("output") or [])])
        response_id, entry = kept.previous, None
    return [bare(item) for turn in reversed(turns) for item in turn]


def _hidden(entry, owner):
    """Whether a stored response is another key's or deleted: for this caller, not there."""
    return not sees(owner, entry.owner) or entry.status == DELETED


def bare(item):
    """An item as the model is to read it: without what names it in the store."""
    return {k: v for k, v in item.items() if k not in STORE_FIELDS}


def as_list(value):
    """A create's input as a list of items (a string is one user message)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return value if isinstance(value, list) else []
