"""Conversations in a SQL store (SQLite or PostgreSQL): a row each, and their items in order,
beside the responses.

Every change is one transaction that first locks the conversation's row (SQLite
locks the whole file for it; PostgreSQL the row, FOR UPDATE), so workers adding to
one conversation at once cannot interleave: each add, and each turn's items, stay
together, in the order they reach the store. An item's place is its `position`,
counted up by the conversation's `next`; pages go by that index. An item's id is
kept unless the conversation has one such already (then it takes a fresh one): ids
name items in pages, gets and deletes.

The statements are written once, with `?` placeholders; the store gives each backend's
own (`store.placeholder`), and runs them: `store.change(change, *args)` runs
change(db, now, *args) in a transaction, `store.reading(read, *args)` runs
read(db, *args) on a connection, each raising StoreError when the database fails.
"""

import json
import time

from items import fresh_id
from store import Conversation, ConversationFull
from store.sql import SQLPart

CONVERSATION = """
SELECT id, owner, metadata, created_at, count FROM conversations
WHERE id = ? AND expires_at > ?
"""
ALL = 2 ** 62  # a LIMIT that takes every row, in both dialects
ITEMS = {  # the page after `position` (or from either end), one more than asked
    "asc": "SELECT id, item FROM conversation_items WHERE conversation = ? AND position > ? "
           "ORDER BY position LIMIT ?",
    "desc": "SELECT id, item FROM conversation_items WHERE conversation = ? AND position < ? "
            "ORDER BY position DESC LIMIT ?",
}
POSITION = "SELECT position FROM conversation_items WHERE conversation = ? AND id = ?"
ITEM = "SELECT id, item FROM conversation_items WHERE conversation = ? AND id = ?"


class SQLConversations(SQLPart):
    """Conversations in a SQL store's database; see store/__init__.py for the contract."""

    def __init__(self, store, ttl, lock_row=""):
        super().__init__(store)
        self.ttl = ttl
        self.lock_row = lock_row  # what makes a SELECT lock the row it reads, if needed

    def create(self, conversation_id, owner, metadata, items):
        return self._change(self._create, conversation_id, owner, metadata, items)

    def get(self, conversation_id):
        row = self._one(CONVERSATION, (conversation_id, time.time()))
        return _conversation(row) if row else None

    def update(self, conversation_id, metadata):
        return self._change(self._update, conversation_id, metadata)

    def delete(self, conversation_id):
        return self._change(self._delete, conversation_id)

    def add(self, conversation_id, items, most):
        return self._change(self._add, conversation_id, items, most)

    def append_turn(self, conversation_id, response_id, items):
        return self._change(self._append_turn, conversation_id, response_id, items)

    def items(self, conversation_id, limit, order, after=None):
        """A page of items, `limit` long (None: all), and whether more follow; None where
        `after` names no item of the conversation."""
        return self.store.reading(self._page, conversation_id, limit, order, after)

    def item(self, conversation_id, item_id):
        row = self._one(ITEM, (conversation_id, item_id))
        return _item(row) if row and self.get(conversation_id) else None

    def delete_item(self, conversation_id, item_id):
        return self._change(self._delete_item, conversation_id, item_id)

    def _change(self, change, *args):
        return self.store.change(change, *args)

    def _one(self, statement, params):
        return self.store.reading(lambda db: self._run(db, statement, params).fetchone())

    def _held(self, db, now, conversation_id):
        """The live conversation's row, locked for this transaction; None if there is none."""
        return self._run(db, CONVERSATION + self.lock_row, (conversation_id, now)).fetchone()

    def _page(self, db, conversation_id, limit, order, after):
        if after is None:
            start = -1 if order == "asc" else ALL
        else:
            row = self._run(db, POSITION, (conversation_id, after)).fetchone()
            if row is None:
                return None
            start = row[0]
        count = ALL if limit is None else limit + 1
        rows = self._run(db, ITEMS[order], (conversation_id, start, count)).fetchall()
        more = limit is not None and len(rows) > limit
        return [_item(row) for row in rows[:limit]], more

    def _create(self, db, now, conversation_id, owner, metadata, items):
        self._run(db, "INSERT INTO conversations (id, owner, metadata, created_at, expires_at) "
                  "VALUES (?, ?, ?, ?, ?)",
                  (conversation_id, owner, json.dumps(metadata), now, now + self.ttl))
        self._insert(db, now, conversation_id, items)
        return _conversation(self._run(db, CONVERSATION, (conversation_id, now)).fetchone())

    def _update(self, db, now, conversation_id, metadata):
        self._run(db, "UPDATE conversations SET metadata = ?, expires_at = ? "
                  "WHERE id = ? AND expires_at > ?",
                  (json.dumps(metadata), now + self.ttl, conversation_id, now))
        row = self._run(db, CONVERSATION, (conversation_id, now)).fetchone()
        return _conversation(row) if row else None

    def _delete(self, db, now, conversation_id):
        found = self._run(db, "DELETE FROM conversations WHERE id = ? AND expires_at > ?",
                          (conversation_id, now)).rowcount
        self._run(db, "DELETE FROM conversation_items WHERE conversation = ?", (conversation_id,))
        return bool(found)

    def _add(self, db, now, conversation_id, items, most):
        row = self._held(db, now, conversation_id)
        if row is None:
            return None
        if row[4] + len(items) > most:
            raise ConversationFull(f"a conversation holds at most {most} items")
        return self._insert(db, now, conversation_id, items)

    def _append_turn(self, db, now, conversation_id, response_id, items):
        """A response's items, once: a second call for the response changes nothing."""
        if self._held(db, now, conversation_id) is None:
            return False
        turned = self._run(db, "INSERT INTO conversation_turns (response_id, expires_at) "
                           "VALUES (?, ?) ON CONFLICT DO NOTHING",
                           (response_id, now + self.ttl)).rowcount
        if turned:
            self._insert(db, now, conversation_id, items)
        return bool(turned)

    def _delete_item(self, db, now, conversation_id, item_id):
        if self._held(db, now, conversation_id) is None:
            return None
        gone = self._run(db, "DELETE FROM conversation_items WHERE conversation = ? AND id = ?",
                         (conversation_id, item_id)).rowcount
        if not gone:
            return None
        self._run(db, "UPDATE conversations SET count = count - 1, expires_at = ? WHERE id = ?",
                  (now + self.ttl, conversation_id))
        return _conversation(self._run(db, CONVERSATION, (conversation_id, now)).fetchone())

    def _insert(self, db, now, conversation_id, items):
        """Append items at the conversation's end, each under its id or a fresh one."""
        position = self._run(db, "SELECT next FROM conversations WHERE id = ?",
                             (conversation_id,)).fetchone()[0]
        stored = []
        for item in items:
            item_id = item.get("id")
            if not isinstance(item_id, str) or not item_id or \
                    self._run(db, POSITION, (conversation_id, item_id)).fetchone():
                item_id = fresh_id(item.get("type"))
            body = {k: v for k, v in item.items() if k != "id"}
            self._run(db, "INSERT INTO conversation_items (conversation, position, id, item) "
                      "VALUES (?, ?, ?, ?)",
                      (conversation_id, position, item_id, json.dumps(body)))
            stored.append({"id": item_id, **body})
            position += 1
        self._run(db, "UPDATE conversations SET next = ?, count = count + ?, expires_at = ? "
                  "WHERE id = ?", (position, len(items), now + self.ttl, conversation_id))
        return stored


def _conversation(row):
    conversation_id, owner, metadata, created_at, count = row
    return Conversation(conversation_id, owner, json.loads(metadata), created_at, count)


def _item(row):
    return {"id": row[0], **json.loads(row[1])}
