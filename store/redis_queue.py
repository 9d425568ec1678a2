"""The queue in Redis: per kind, a sorted set of keys by when each is due, and a hash per item
(its payload, when it was added, its attempts) that expires `keep` after it was added.

Each change is a Lua script, so a claim (read the due keys, move each `lease` on) is
one atomic step however many hosts claim at once. A done key leaves the sorted set;
its hash stays until it expires, so the same key is not queued twice.
"""

import json
import time

import redis

from store import Due, StoreError

PREFIX = "gateway:queue:"  # PREFIX + kind: the sorted set; + ":" + key: an item's hash

# KEYS[1] the set, KEYS[2] the item. ARGV: key, payload, now, due_at, keep.
ADD = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], 'payload', ARGV[2], 'created_at', ARGV[3], 'attempts', 0)
redis.call('EXPIRE', KEYS[2], math.ceil(tonumber(ARGV[5])))
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
return 1
"""
# KEYS[1] the set. ARGV: now, limit, lease, the items' key prefix. An item whose hash has
# expired is dropped from the set.
CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, key in ipairs(due) do
    local item = redis.call('HMGET', ARGV[4] .. key, 'payload', 'created_at', 'attempts')
    if item[1] then
        redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), key)
        table.insert(out, key)
        table.insert(out, item[1])
        table.insert(out, item[2])
        table.insert(out, item[3])
    else
        redis.call('ZREM', KEYS[1], key)
    end
end
return out
"""
# KEYS[1] the set, KEYS[2] the item. ARGV: key, due_at. Only a key still queued.
RETRY = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
    redis.call('HINCRBY', KEYS[2], 'attempts', 1)
end
"""


class RedisQueue:
    """Due items in Redis; see store/__init__.py for the contract."""

    def __init__(self, client):
        self.client = client
        self._add = client.register_script(ADD)
        self._claim = client.register_script(CLAIM)
        self._retry = client.register_script(RETRY)

    def add(self, kind, key, payload, due_at, keep):
        args = [key, json.dumps(payload), time.time(), due_at, keep]
        return bool(self._call(self._add, keys=[PREFIX + kind, _item(kind, key)], args=args))

    def claim(self, kind, now, limit, lease):
        flat = self._call(self._claim, keys=[PREFIX + kind],
                          args=[now, limit, lease, f"{PREFIX}{kind}:"])
        return [Due(key, json.loads(payload), float(created_at), int(attempts))
                for key, payload, created_at, attempts in zip(*[iter(flat)] * 4)]

    def retry(self, kind, key, due_at):
        self._call(self._retry, keys=[PREFIX + kind, _item(kind, key)], args=[key, due_at])

    def done(self, kind, key):
        self._call(self.client.zrem, PREFIX + kind, key)

    def depth(self, kind):
        return self._call(self.client.zcard, PREFIX + kind)

    @staticmethod
    def _call(command, *args, **kwargs):
        try:
            return command(*args, **kwargs)
        except redis.RedisError as exc:
            raise StoreError(f"Redis store: {exc}") from exc


def _item(kind, key):
    return f"{PREFIX}{kind}:{key}"
