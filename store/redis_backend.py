"""The Redis store: one hash per response id, shared by every gateway host.

The compare-and-set in record() is a Lua script, which Redis runs atomically:
no other client's command runs between its read and its write. Expiry is
Redis's own, set once when the id is first stored.
"""

import json
import time
from urllib.parse import urlsplit

import redis

from store import EVENTS_KEEP, Entry, Kept, StoreError, rank
from store.redis_conversations import RedisConversations
from store.redis_queue import RedisQueue

KEY_PREFIX = "gateway:response:"
INPUT_PREFIX = "gateway:input:"  # a create's input items and previous id, as JSON
EVENTS_PREFIX = "gateway:events:"  # a run's events, a list whose index is the sequence number
TIMEOUT = 1.0  # seconds; a store slower than this is treated as down, not waited for

# KEYS[1]: the id's hash, KEYS[2] and KEYS[3]: its input's and its events' keys. ARGV: provider, status ('' for none), rank, body, now, ttl,
# run ('1': a gateway run's write: stamp its heartbeat, never rewrite a final status),
# owner ('' for none: only a new entry takes it). The condition is
# store.may_replace(strict=run), written in Lua (rank 3 is a delete's tombstone).
RECORD = """
local stored = redis.call('HMGET', KEYS[1], 'status', 'rank')
local run = ARGV[7] == '1'
if stored[2] then
    local old_rank, new_rank = tonumber(stored[2]), tonumber(ARGV[3])
    local refresh = stored[1] == ARGV[2] and not (run and new_rank >= 2)
    local deleting = new_rank == 3 and old_rank < 3
    if old_rank == 3 or (not deleting and not refresh and (old_rank >= 2 or new_rank < old_rank)) then
        return redis.call('HGETALL', KEYS[1])
    end
    redis.call('HSET', KEYS[1], 'provider', ARGV[1], 'status', ARGV[2], 'rank', ARGV[3],
               'body', ARGV[4], 'updated_at', ARGV[5])
else
    redis.call('HSET', KEYS[1], 'provider', ARGV[1], 'status', ARGV[2], 'rank', ARGV[3],
               'body', ARGV[4], 'created_at', ARGV[5], 'updated_at', ARGV[5])
    if ARGV[8] ~= '' then
        redis.call('HSET', KEYS[1], 'owner', ARGV[8])
    end
    redis.call('EXPIRE', KEYS[1], ARGV[6])
end
if run then
    redis.call('HSET', KEYS[1], 'heartbeat_at', ARGV[5])
end
if tonumber(ARGV[3]) == 3 then
    redis.call('DEL', KEYS[2], KEYS[3])  -- deleted: its input and events go too
end
return redis.call('HGETALL', KEYS[1])
"""
# KEYS: the hashes of runs this process holds. ARGV[1]: now. Only runs still going.
HEARTBEAT = """
for _, key in ipairs(KEYS) do
    local stored = redis.call('HMGET', key, 'rank', 'heartbeat_at')
    if stored[1] and tonumber(stored[1]) < 2 and stored[2] then
        redis.call('HSET', key, 'heartbeat_at', ARGV[1])
    end
end
return 0
"""


# KEYS: pairs of a run's events list and its response's hash. ARGV: for each run, its
# first number and its events' count, then all the events, JSON. A deleted response's
# tombstone (rank 3) takes no more events: a run's last ones may come after the delete.
APPEND_EVENTS = """
local at = #KEYS + 1  -- the events follow the (first, count) pairs
for i = 1, #KEYS, 2 do
    local first, count = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
    if redis.call('HGET', KEYS[i + 1], 'rank') ~= '3' then
        redis.call('LTRIM', KEYS[i], 0, first - 1)  -- what a retried batch wrote once goes
        for j = at, at + count - 1 do
            redis.call('RPUSH', KEYS[i], ARGV[j])
        end
        redis.call('EXPIRE', KEYS[i], ARGV[#ARGV])
    end
    at = at + count
end
return 0
"""


class RedisStore:
    """Responses in Redis; the client's connection pool is thread- and fork-safe."""

    def __init__(self, client, ttl, where, conversation_ttl=None):
        self.client, self.ttl, self.where = client, int(ttl), where
        self.conversations = RedisConversations(client, conversation_ttl or ttl)
        self.queue = RedisQueue(client)
        self._record = client.register_script(RECORD)
        self._heartbeat = client.register_script(HEARTBEAT)
        self._append_events = client.register_script(APPEND_EVENTS)

    @classmethod
    def from_url(cls, url, ttl, conversation_ttl=None):
        """redis://[:password@]host:port/db, rediss:// for TLS, unix:///path.sock."""
        parts = urlsplit(url)
        try:
            where = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
            client = redis.Redis.from_url(
                url, decode_responses=True, socket_timeout=TIMEOUT,
                socket_connect_timeout=TIMEOUT,
            )
        except ValueError as exc:  # its own message might quote the URL, password and all
            raise ValueError("is not a valid Redis URL") from exc
        return cls(client, ttl, where, conversation_ttl)  # no connection yet: a Redis down at start is no error

    def __str__(self):
        return f"Redis at {self.where}"  # never the URL: it may hold a password

    def local_secret(self):
        """None: several hosts share this store, and a secret kept in it would be in
        every copy of it; GATEWAY_SECRET must say one for them all."""
        return None

    def get(self, response_id):
        """The live entry for an id, or None."""
        try:
            fields = self.client.hgetall(KEY_PREFIX + response_id)
        except redis.RedisError as exc:
            raise StoreError(f"Redis store: {exc}") from exc
        return _entry(fields) if fields else None

    def record(self, response_id, provider, body, run=False, owner=None):
        """Store the Response unless its status would regress; return what is stored."""
        status = body.get("status")
        args = [provider, status or "", rank(status), json.dumps(body), time.time(), self.ttl,
                "1" if run else "0", owner or ""]
        try:
            flat = self._record(keys=[KEY_PREFIX + response_id, INPUT_PREFIX + response_id,
                                      EVENTS_PREFIX + response_id], args=args)
        except redis.RedisError as exc:
            raise StoreError(f"Redis store: {exc}") from exc
        return _entry(dict(zip(flat[::2], flat[1::2])))

    def statuses(self, response_ids):
        """{id: status} for those of `response_ids` that are stored."""
        ids = list(response_ids)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for response_id in ids:
                    pipe.hget(KEY_PREFIX + response_id, "status")
                found = pipe.execute()
        except redis.RedisError as exc:
            raise StoreError(f"Redis store: {exc}") from exc
        return {i: status or None for i, status in zip(ids, found) if status is not None}

    def keep_input(self, response_id, items, previous=None, conversation=None):
        """Keep a create's input items (the first call for an id counts)."""
        kept = json.dumps({"items": items, "previous": previous, "conversation": conversation})
        try:
            self.client.set(INPUT_PREFIX + response_id, kept, ex=self.ttl, nx=True)
        except redis.RedisError as exc:
            raise StoreError(f"Redis store: {exc}") from exc

    def append_events(self, batch):
        """Log runs' events: for each (response_id, first, events), numbered from `first`
        (each run's process is its one writer)."""
        batch = [(rid, first, events) for rid, first, events in batch if events]
        if not batch:
            return
        keys = [key for rid, _, _ in batch for key in (EVENTS_PREFIX + rid, KEY_PREFIX + rid)]
        args = [n for _, first, events in batch for n in (first, len(events))]
        args += [json.dumps(event) for _, _, events in batch for event in events]
        try:
            self._append_events(keys=keys, args=[*args, int(EVENTS_KEEP)])
        except redis.RedisError as exc:
            raise StoreError(f"Redis store: {exc}") from exc

    def events(self, response_id, after):
        """The run's logged events numbered after `after`, in order."""
        try:
            found = self.client.lrange(EVENTS_PREFIX + response_id, after + 1, -1)
        except redis.RedisError as exc:
            raise StoreError(f"Redis store: {exc}") from exc
        return [json.loads(e) for e in found]

    def input_items(self, response_id):
        """What keep_input kept for an id (a Kept), or None."""
        try:
            kept = self.client.get(INPUT_PREFIX + response_id)
        except redis.RedisError as exc:
            raise StoreError(f"Redis store: {exc}") from exc
        return Kept(**json.loads(kept)) if kept else None

    def heartbeat(self, response_ids):
        """Stamp the heartbeat of those gateway runs among `response_ids` still going."""
        keys = [KEY_PREFIX + i for i in response_ids]
        if not keys:
            return
        try:
            self._heartbeat(keys=keys, args=[time.time()])
        except redis.RedisError as exc:
            raise StoreError(f"Redis store: {exc}") from exc


def _entry(fields):
    heartbeat_at = fields.get("heartbeat_at")
    return Entry(
        fields["provider"], fields["status"] or None, json.loads(fields["body"]),
        float(fields["created_at"]), float(fields["updated_at"]),
        float(heartbeat_at) if heartbeat_at else None, fields.get("owner") or None,
    )
