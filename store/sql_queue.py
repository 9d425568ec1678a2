"""The queue in a SQL store (SQLite or PostgreSQL): a row per item, found by its kind and
when it is due.

A claim is one transaction: it picks the due rows (PostgreSQL skips those another
transaction holds, FOR UPDATE SKIP LOCKED; SQLite holds the whole file) and moves each
`lease` seconds on, so a second claimer, on this host or another, finds none of them
until the lease has passed: two processes never hold one item at once. A done item
stays, never due again, until it expires, so the same key is not queued twice. The
store runs the statements (`store.change`, `store.reading`, `store.placeholder`), as
for conversations (sql_conversations.py).
"""

import json

from store import Due
from store.sql import SQLPart

NEVER = 1e18  # the due time of an item that is done
ADD = ("INSERT INTO queue (kind, key, payload, created_at, due_at, attempts, expires_at) "
       "VALUES (?, ?, ?, ?, ?, 0, ?) ON CONFLICT DO NOTHING")
DUE = ("SELECT key, payload, created_at, attempts FROM queue "
       "WHERE kind = ? AND due_at <= ? ORDER BY due_at LIMIT ?")
MOVE = "UPDATE queue SET due_at = ? WHERE kind = ? AND key = ?"
RETRY = "UPDATE queue SET due_at = ?, attempts = attempts + 1 WHERE kind = ? AND key = ?"
DEPTH = "SELECT count(*) FROM queue WHERE kind = ? AND due_at < ?"


class SQLQueue(SQLPart):
    """Due items in a SQL store's database; see store/__init__.py for the contract."""

    def __init__(self, store, skip_locked=""):
        super().__init__(store)
        self.skip_locked = skip_locked  # what makes a SELECT skip rows others hold

    def add(self, kind, key, payload, due_at, keep):
        return self.store.change(self._add, kind, key, payload, due_at, keep)

    def claim(self, kind, now, limit, lease):
        return self.store.change(self._claim, kind, now, limit, lease)

    def retry(self, kind, key, due_at):
        self.store.change(self._set, RETRY, (due_at, kind, key))

    def done(self, kind, key):
        self.store.change(self._set, MOVE, (NEVER, kind, key))

    def depth(self, kind):
        return self.store.reading(lambda db: self._run(db, DEPTH, (kind, NEVER)).fetchone()[0])

    def _add(self, db, now, kind, key, payload, due_at, keep):
        row = (kind, key, json.dumps(payload), now, due_at, now + keep)
        return bool(self._run(db, ADD, row).rowcount)

    def _set(self, db, now, statement, params):
        self._run(db, statement, params)

    def _claim(self, db, _now, kind, now, limit, lease):
        rows = self._run(db, DUE + self.skip_locked, (kind, now, limit)).fetchall()
        for key, *_ in rows:
            self._run(db, MOVE, (now + lease, kind, key))
        return [Due(key, json.loads(payload), created_at, attempts)
                for key, payload, created_at, attempts in rows]
