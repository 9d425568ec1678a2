"""The SQLite store's conversations: a row each, and their items in order, in the same file.

Every change is one transaction in the store's write turn (SQLiteStore._in_turn), so
workers adding to one conversation at once cannot interleave: each add, and each
turn's items, stay together, in the order they reach the store. An item's place is
its `position`, counted up by the conversation's `next`; pages go by that index.
An item's id is kept unless the conversation has one such already (then it takes a
fresh one): ids name items in pages, gets and deletes.
"""

import json
import sqlite3
import time

from items import fresh_id
from store import Conversation, ConversationFull, StoreError

CONVERSATION = """
SELECT id, owner, metadata, created_at, count FROM conversations
WHERE id = ? AND expires_at > ?
"""
ITEMS = {  # the page after `position` (or from either end), one more than asked
    "asc": "SELECT id, item FROM conversation_items WHERE conversation = ? AND position > ? "
           "ORDER BY position LIMIT ?",
    "desc": "SELECT id, item FROM conversation_items WHERE conversation = ? AND position < ? "
            "ORDER BY position DESC LIMIT ?",
}
POSITION = "SELECT position FROM conversation_items WHERE conversation = ? AND id = ?"
ITEM = "SELECT id, item FROM conversation_items WHERE conversation = ? AND id = ?"


class SQLiteConversations:
    """Conversations in the SQLite store's file; see store/__init__.py for the contract."""

    def __init__(self, store, ttl):
        self.store, self.ttl = store, ttl

    def create(self, conversation_id, owner, metadata, items):
        return self._change(self._create, conversation_id, owner, metadata, items)

    def get(self, conversation_id):
        row = self._read(CONVERSATION, (conversation_id, time.time()))
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
        try:
            with self.store._connection() as db:
                if after is None:
                    start = -1 if order == "asc" else 2 ** 62
                else:
                    row = db.execute(POSITION, (conversation_id, after)).fetchone()
                    if row is None:
                        return None
                    start = row[0]
                count = -1 if limit is None else limit + 1  # LIMIT -1: no limit
                rows = db.execute(ITEMS[order], (conversation_id, start, count)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc
        more = limit is not None and len(rows) > limit
        return [_item(row) for row in rows[:limit]], more

    def item(self, conversation_id, item_id):
        row = self._read(ITEM, (conversation_id, item_id))
        return _item(row) if row and self.get(conversation_id) else None

    def delete_item(self, conversation_id, item_id):
        return self._change(self._delete_item, conversation_id, item_id)

    # Each change: one transaction, in the store's write turn.

    def _change(self, change, *args):
        with self.store._write_lock:
            return self.store._in_turn(self._transaction, change, *args)

    def _transaction(self, change, *args):
        try:
            with self.store._connection() as db:
                with db:  # IMMEDIATE: a change reads, then writes, and must not find
                    db.execute("BEGIN IMMEDIATE")  # its read overtaken by then (WAL)
                    return change(db, time.time(), *args)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc

    def _read(self, statement, params):
        try:
            with self.store._connection() as db:
                return db.execute(statement, params).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc

    def _create(self, db, now, conversation_id, owner, metadata, items):
        db.execute("INSERT INTO conversations (id, owner, metadata, created_at, expires_at) "
                   "VALUES (?, ?, ?, ?, ?)",
                   (conversation_id, owner, json.dumps(metadata), now, now + self.ttl))
        self._insert(db, now, conversation_id, items)
        return _conversation(db.execute(CONVERSATION, (conversation_id, now)).fetchone())

    def _update(self, db, now, conversation_id, metadata):
        db.execute("UPDATE conversations SET metadata = ?, expires_at = ? "
                   "WHERE id = ? AND expires_at > ?",
                   (json.dumps(metadata), now + self.ttl, conversation_id, now))
        row = db.execute(CONVERSATION, (conversation_id, now)).fetchone()
        return _conversation(row) if row else None

    def _delete(self, db, now, conversation_id):
        found = db.execute("DELETE FROM conversations WHERE id = ? AND expires_at > ?",
                           (conversation_id, now)).rowcount
        db.execute("DELETE FROM conversation_items WHERE conversation = ?", (conversation_id,))
        return bool(found)

    def _add(self, db, now, conversation_id, items, most):
        row = db.execute(CONVERSATION, (conversation_id, now)).fetchone()
        if row is None:
            return None
        if row[4] + len(items) > most:
            raise ConversationFull(f"a conversation holds at most {most} items")
        return self._insert(db, now, conversation_id, items)

    def _append_turn(self, db, now, conversation_id, response_id, items):
        """A response's items, once: a second call for the response changes nothing."""
        if db.execute(CONVERSATION, (conversation_id, now)).fetchone() is None:
            return False
        turned = db.execute("INSERT OR IGNORE INTO conversation_turns (response_id, expires_at) "
                            "VALUES (?, ?)", (response_id, now + self.ttl)).rowcount
        if turned:
            self._insert(db, now, conversation_id, items)
        return bool(turned)

    def _delete_item(self, db, now, conversation_id, item_id):
        if db.execute(CONVERSATION, (conversation_id, now)).fetchone() is None:
            return None
        gone = db.execute("DELETE FROM conversation_items WHERE conversation = ? AND id = ?",
                          (conversation_id, item_id)).rowcount
        if not gone:
            return None
        db.execute("UPDATE conversations SET count = count - 1, expires_at = ? WHERE id = ?",
                   (now + self.ttl, conversation_id))
        return _conversation(db.execute(CONVERSATION, (conversation_id, now)).fetchone())

    def _insert(self, db, now, conversation_id, items):
        """Append items at the conversation's end, each under its id or a fresh one."""
        position = db.execute("SELECT next FROM conversations WHERE id = ?",
                              (conversation_id,)).fetchone()[0]
        stored = []
        for item in items:
            item_id = item.get("id")
            if not isinstance(item_id, str) or not item_id or \
                    db.execute(POSITION, (conversation_id, item_id)).fetchone():
                item_id = fresh_id(item.get("type"))
            body = {k: v for k, v in item.items() if k != "id"}
            db.execute("INSERT INTO conversation_items (conversation, position, id, item) "
                       "VALUES (?, ?, ?, ?)", (conversation_id, position, item_id,
                                               json.dumps(body)))
            stored.append({"id": item_id, **body})
            position += 1
        db.execute("UPDATE conversations SET next = ?, count = count + ?, expires_at = ? "
                   "WHERE id = ?", (position, len(items), now + self.ttl, conversation_id))
        return stored


def _conversation(row):
    conversation_id, owner, metadata, created_at, count = row
    return Conversation(conversation_id, owner, json.loads(metadata), created_at, count)


def _item(row):
    return {"id": row[0], **json.loads(row[1])}
