"""The Redis store's conversations: three keys each, every change one Lua script.

gateway:conversation:<id> is a hash (owner, metadata, created_at, next, count);
its items are a sorted set of ids scored by their place (...:order) and a hash of id
to the item but its id, as JSON (...:items). A script runs atomically, so hosts adding
to one conversation at once cannot interleave: each add, and each turn's items, stay
together, in the order they reach Redis. A turn is marked (gateway:turn:<response id>)
in the same script, so a response's items are appended once. All of a conversation's
keys expire together, `ttl` after its last change.
"""

import json
import time

import redis

from items import fresh_id
from store import Conversation, ConversationFull, StoreError

PREFIX = "gateway:conversation:"
TURN_PREFIX = "gateway:turn:"

# Appends ARGV's items from `at` on (each: id, a spare id, the item but its id) to the
# conversation whose keys are KEYS[1..3], an id taken already taking its spare; returns
# the ids it used. ARGV[1] now, ARGV[2] ttl. Prepended to the scripts that append.
INSERT = """
local function insert(at)
    local next, ids = tonumber(redis.call('HGET', KEYS[1], 'next')), {}
    local n = (#ARGV - at + 1) / 3
    for i = 0, n - 1 do
        local id = ARGV[at + 3 * i]
        if redis.call('HEXISTS', KEYS[3], id) == 1 then
            id = ARGV[at + 3 * i + 1]
        end
        redis.call('ZADD', KEYS[2], next, id)
        redis.call('HSET', KEYS[3], id, ARGV[at + 3 * i + 2])
        next = next + 1
        ids[#ids + 1] = id
    end
    redis.call('HSET', KEYS[1], 'next', next)
    redis.call('HINCRBY', KEYS[1], 'count', n)
    for i = 1, 3 do
        redis.call('EXPIRE', KEYS[i], ARGV[2])
    end
    return ids
end
"""
# ARGV[3] owner ('' for none), ARGV[4] metadata, then the items.
CREATE = INSERT + """
redis.call('HSET', KEYS[1], 'owner', ARGV[3], 'metadata', ARGV[4], 'created_at', ARGV[1],
           'next', 0, 'count', 0)
return insert(5)
"""
# ARGV[3] the most items it may hold, then the items. -1: no such conversation; -2: full.
ADD = INSERT + """
local count = redis.call('HGET', KEYS[1], 'count')
if not count then return -1 end
if tonumber(count) + (#ARGV - 3) / 3 > tonumber(ARGV[3]) then return -2 end
return insert(4)
"""
# KEYS[4] the turn's mark; then the items. 0: no such conversation; 1: appended; 2: already.
APPEND_TURN = INSERT + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[2]) then return 2 end
insert(3)
return 1
"""
UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'metadata', ARGV[2])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return 1
"""
DELETE_ITEM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('ZREM', KEYS[2], ARGV[2]) == 0 then return 0 end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HINCRBY', KEYS[1], 'count', -1)
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return 1
"""
# ARGV: order, after ('' for none), limit (-1: all). Returns false if `after` is no item,
# else the ids and items of the page, flat, and one more when there are more.
ITEMS = """
local score
if ARGV[2] ~= '' then
    score = redis.call('ZSCORE', KEYS[1], ARGV[2])
    if not score then return false end
end
local count = tonumber(ARGV[3])
local ids
if ARGV[1] == 'asc' then
    local from = score and ('(' .. score) or '-inf'
    ids = count < 0 and redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf')
        or redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'LIMIT', 0, count + 1)
else
    local from = score and ('(' .. score) or '+inf'
    ids = count < 0 and redis.call('ZREVRANGEBYSCORE', KEYS[1], from, '-inf')
        or redis.call('ZREVRANGEBYSCORE', KEYS[1], from, '-inf', 'LIMIT', 0, count + 1)
end
local page = {}
for _, id in ipairs(ids) do
    page[#page + 1] = id
    page[#page + 1] = redis.call('HGET', KEYS[2], id)
end
return page
"""


class RedisConversations:
    """Conversations in Redis; see store/__init__.py for the contract."""

    def __init__(self, client, ttl):
        self.client, self.ttl = client, int(ttl)
        self._create, self._add, self._append_turn = (
            client.register_script(s) for s in (CREATE, ADD, APPEND_TURN))
        self._update, self._delete_item, self._items = (
            client.register_script(s) for s in (UPDATE, DELETE_ITEM, ITEMS))

    def create(self, conversation_id, owner, metadata, items):
        self._call(self._create, conversation_id, owner or "", json.dumps(metadata),
                   *_flat(items))
        return self.get(conversation_id)

    def get(self, conversation_id):
        fields = self._redis(self.client.hgetall, PREFIX + conversation_id)
        if not fields:
            return None
        return Conversation(conversation_id, fields["owner"] or None,
                            json.loads(fields["metadata"]), float(fields["created_at"]),
                            int(fields["count"]))

    def update(self, conversation_id, metadata):
        if not self._call(self._update, conversation_id, json.dumps(metadata), now=False):
            return None
        return self.get(conversation_id)

    def delete(self, conversation_id):
        return bool(self._redis(self.client.delete, *_keys(conversation_id)))

    def add(self, conversation_id, items, most):
        ids = self._call(self._add, conversation_id, most, *_flat(items))
        if ids == -1:
            return None
        if ids == -2:
            raise ConversationFull(f"a conversation holds at most {most} items")
        return _stored(ids, items)

    def append_turn(self, conversation_id, response_id, items):
        done = self._call(self._append_turn, conversation_id, *_flat(items),
                          extra_key=TURN_PREFIX + response_id)
        return done == 1

    def items(self, conversation_id, limit, order, after=None):
        keys = _keys(conversation_id)[1:]
        flat = self._redis(self._items, keys=keys,
                           args=[order, after or "", -1 if limit is None else limit])
        if flat is None:
            return None
        page = [{"id": i, **json.loads(item)}
                for i, item in zip(flat[::2], flat[1::2]) if item is not None]
        more = limit is not None and len(page) > limit
        return page[:limit], more

    def item(self, conversation_id, item_id):
        found = self._redis(self.client.hget, PREFIX + conversation_id + ":items", item_id)
        return {"id": item_id, **json.loads(found)} if found else None

    def delete_item(self, conversation_id, item_id):
        if not self._call(self._delete_item, conversation_id, item_id, now=False):
            return None
        return self.get(conversation_id)

    def _call(self, script, conversation_id, *args, extra_key=None, now=True):
        keys = _keys(conversation_id) + ([extra_key] if extra_key else [])
        head = [time.time(), self.ttl] if now else [self.ttl]
        return self._redis(script, keys=keys, args=[*head, *args])

    def _redis(self, call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except redis.RedisError as exc:
            raise StoreError(f"Redis store: {exc}") from exc


def _keys(conversation_id):
    key = PREFIX + conversation_id
    return [key, key + ":order", key + ":items"]


def _flat(items):
    """Each item as the scripts take it: its id (or a fresh one), a spare, its body."""
    flat = []
    for item in items:
        item_id = item.get("id")
        spare = fresh_id(item.get("type"))
        body = {k: v for k, v in item.items() if k != "id"}
        flat += [item_id if isinstance(item_id, str) and item_id else spare, spare,
                 json.dumps(body)]
    return flat


def _stored(ids, items):
    return [{"id": i, **{k: v for k, v in item.items() if k != "id"}}
            for i, item in zip(ids, items)]
