"""The response store: which provider holds each response id, and its last known state.

The gateway learns ids from creates and from successful retrieves and cancels,
so later calls go straight to the right provider. Three backends keep the same
contract, chosen by STORE_URL: SQLite, one file shared by every worker on a
host; Redis, shared by every host behind a load balancer, with a cache's
durability; PostgreSQL, shared by every host, durable.

The contract, for a store made by open_store(url, ttl):

    get(response_id) -> Entry | None
    record(response_id, provider, body, run=False, owner=None) -> Entry  # as stored now
    statuses(response_ids) -> {response_id: status}           # the live ones among them
    heartbeat(response_ids)                                   # runs still going, now
    keep_input(response_id, items, previous=None)             # a create's input, once
    input_items(response_id) -> Kept | None                   # what keep_input kept
    append_events([(response_id, first, events), ...])        # runs' events, numbered
    events(response_id, after) -> [event]                     # those numbered after `after`
    local_secret() -> bytes | None                            # see config.py's _secrets
    conversations                                             # a conversation store, below

record() is a compare-and-set done by the backend in one atomic step, so two
workers racing cannot interleave. It writes unless that would make the status
regress (`may_replace`); either way it returns what is stored. Entries expire
`ttl` seconds after they were first stored. Every method raises StoreError when
the backend cannot be reached. Where each key sees only its own responses the
gateway then fails closed (a 503: routing.py); where they are shared, it carries
on without the store, except for the responses it runs itself, which live only
here.

local_secret() is a secret for keying owner ids (owners.py) that the backend
can keep apart from its data (SQLite: a file beside the database), or None
where it cannot (Redis: every copy would hold it).

Responses the gateway runs itself (background.py) are written with run=True:
that stamps the entry's heartbeat (which marks it as run by the gateway), and
makes the write strict, so a final status is never rewritten, not even by
itself: the first cancel, completion or failure is the one that stands.
heartbeat() stamps the entries of runs that are still going.

keep_input() keeps the input items of a create whose provider keeps none
(the first call for an id counts), and the previous_response_id it followed,
so a conversation can be rebuilt turn by turn; they expire with the entry,
and a delete's tombstone drops them, and the run's events too.

append_events() logs gateway runs' streaming events, each run's numbered from
`first` on (their sequence numbers; a run's process is its one writer), so a
client can resume a stream from any process; they are kept EVENTS_KEEP
seconds after a run's last was added.

`conversations` keeps the gateway's conversations (conversations.py), each with
its items in order, expiring `conversation_ttl` after its last change:

    create(conversation_id, owner, metadata, items) -> Conversation
    get(conversation_id) -> Conversation | None
    update(conversation_id, metadata) -> Conversation | None
    delete(conversation_id) -> bool                          # and its items
    add(conversation_id, items, most) -> [item] | None       # ConversationFull past `most`
    append_turn(conversation_id, response_id, items) -> bool  # once per response id
    items(conversation_id, limit, order, after=None) -> ([item], has_more) | None
    item(conversation_id, item_id) -> item | None
    delete_item(conversation_id, item_id) -> Conversation | None

Items keep their ids where the conversation has none such yet, else take one of
the store's; an add is atomic, and so is a turn, whose items stay together, in
the order turns reach the store. items() is None where `after` names no item.

`queue` holds work due at a time, by kind (webhooks.py: events to deliver,
background responses to watch), for whichever process of whichever host claims
it first:

    add(kind, key, payload, due_at, keep) -> bool  # False: that key is or was queued
    claim(kind, now, limit, lease) -> [Due]        # those due, each held until now + lease
    retry(kind, key, due_at)                       # due again then, one attempt more
    done(kind, key)                                # never due again
    depth(kind) -> int                             # how many are not done

A key is remembered for `keep` seconds after it was added, done or not, so it is
queued once. A claim is atomic: two claimers never hold one item at once; one
that claimed an item and died leaves it to the next claim after its lease.

`owner` names the gateway key that made the response (an owner id, owners.py;
the key itself is never stored). It is written with the entry's first write
and never changed by a later one, whoever makes it; None is no owner.
"""

from typing import NamedTuple
from urllib.parse import urlsplit

EVENTS_KEEP = 3600.0  # seconds a run's events are kept after its last one
DELETED = "deleted"  # a tombstone: the response was deleted, and no write brings it back
FINAL = frozenset({"cancelled", "completed", "failed", "incomplete", DELETED})


class StoreError(Exception):
    """The store could not be read or written; the message holds no credentials."""


class Kept(NamedTuple):
    """A create's input, as the store keeps it where its provider keeps none (or where its
    response is a turn of a conversation, to be appended when it ends)."""

    items: list  # the input items, each with an id
    previous: str | None  # the previous_response_id the create followed
    conversation: str | None = None  # the conversation the response is a turn of


class Conversation(NamedTuple):
    """A conversation the gateway keeps (conversations.py): its items are kept apart."""

    id: str
    owner: str | None  # an owner id (owners.py), as a response's
    metadata: dict
    created_at: float
    count: int  # how many items it holds


class Due(NamedTuple):
    """An item of the store's queue, as a claim hands it out."""

    key: str
    payload: dict
    created_at: float  # when it was added
    attempts: int  # how many times it was retried


class ConversationFull(Exception):
    """Adding the items would take a conversation past its bound; nothing was added."""


class Entry(NamedTuple):
    """One stored response: who holds it and the last Response the gateway answered."""

    provider: str
    status: str | None
    body: dict
    created_at: float
    updated_at: float
    heartbeat_at: float | None = None  # the gateway's runner last said it is alive; None: not run here
    owner: str | None = None  # the key that made it (a derived id, never the key); None: anyone

    @property
    def gateway_run(self):
        """Whether the gateway runs this response itself (background.py), not its provider."""
        return self.heartbeat_at is not None


def tombstone(response_id):
    """What the store keeps of a deleted response: only that it was deleted, so that no
    later write brings it back and every later call can answer 404 at once."""
    return {"id": response_id, "object": "response", "status": DELETED}


def rank(status):
    """How far along a status is: queued and unknown 0, in_progress 1, final 2, deleted 3."""
    if status == DELETED:
        return 3
    if status in FINAL:
        return 2
    return 1 if status == "in_progress" else 0


def may_replace(stored_status, new_status, strict=False):
    """Whether a write of `new_status` may replace `stored_status`.

    A final status is kept for good (a late in_progress, or completed after
    cancelled, cannot replace it); otherwise a status may only move forward.
    A final status may be refreshed by itself (a provider's cancelled Response
    fetched again), unless `strict`: a gateway run's first final word stands.
    A delete replaces any status, and nothing replaces it. The backends apply
    this same rule inside their atomic write.
    """
    if rank(stored_status) == 3 or rank(new_status) == 3:
        return rank(stored_status) < 3
    if stored_status == new_status and not (strict and rank(new_status) == 2):
        return True
    return rank(stored_status) < 2 and rank(new_status) >= rank(stored_status)


def open_store(url, ttl, conversation_ttl=None, pool_size=10):
    """Open the store STORE_URL names (conversations expire like responses unless told
    otherwise; a PostgreSQL store holds up to `pool_size` connections a process); raise
    ValueError if the URL is not one we know."""
    scheme = urlsplit(url).scheme
    conversation_ttl = conversation_ttl or ttl
    if scheme == "sqlite":
        from store.sqlite_backend import SQLiteStore

        return SQLiteStore.from_url(url, ttl, conversation_ttl)
    if scheme in ("redis", "rediss", "unix"):
        from store.redis_backend import RedisStore

        return RedisStore.from_url(url, ttl, conversation_ttl)
    if scheme in ("postgresql", "postgres"):
        from store.postgres_backend import PostgresStore

        return PostgresStore.from_url(url, ttl, conversation_ttl, pool_size)
    raise ValueError("must start with sqlite:///, redis://, rediss://, postgresql:// or "
                     "postgres://")
