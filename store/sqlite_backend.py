"""The SQLite store: one file on this host, shared by every gunicorn worker.

WAL mode lets readers go on while one writer writes; SQLite's own file locks
make the one-statement compare-and-set in record() atomic across processes.
Each thread of each process opens its own connection, on first use (never in
gunicorn's master, whose connections the forked workers must not share).
"""

import json
import os
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

from store import Entry, StoreError, rank

BUSY_TIMEOUT = 5.0  # seconds a write waits for another process's write to finish
PURGE_EVERY = 3600.0  # seconds between deletions of expired rows, per process

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    status TEXT,
    rank INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_expiry ON responses (expires_at);
"""

# One statement, so no other writer can come between the check and the write:
# the WHERE clause is may_replace(), plus "an expired row is as good as none".
RECORD = """
INSERT INTO responses (id, provider, status, rank, body, created_at, updated_at, expires_at)
VALUES (:id, :provider, :status, :rank, :body, :now, :now, :expires_at)
ON CONFLICT (id) DO UPDATE SET
    provider = excluded.provider,
    status = excluded.status,
    rank = excluded.rank,
    body = excluded.body,
    updated_at = excluded.updated_at,
    created_at = CASE WHEN responses.expires_at <= :now
        THEN excluded.created_at ELSE responses.created_at END,
    expires_at = CASE WHEN responses.expires_at <= :now
        THEN excluded.expires_at ELSE responses.expires_at END
WHERE responses.expires_at <= :now
   OR responses.status IS excluded.status
   OR (responses.rank < 2 AND excluded.rank >= responses.rank)
"""
SELECT = """
SELECT provider, status, body, created_at, updated_at FROM responses
WHERE id = ? AND expires_at > ?
"""


class SQLiteStore:
    """Responses in a SQLite file, safe across threads and processes."""

    def __init__(self, path, ttl):
        self.path, self.ttl = path, ttl
        self._local = threading.local()
        self._next_purge = 0.0
        try:
            with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT)) as db:
                db.execute("PRAGMA journal_mode=WAL")  # stays set in the file
                db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store at {path}: {exc}") from exc

    @classmethod
    def from_url(cls, url, ttl):
        """sqlite:///relative/path or sqlite:////absolute/path, as SQLAlchemy spells them."""
        path = url.removeprefix("sqlite:///")
        if not path or path == url or path == ":memory:":
            raise ValueError("must name a file, e.g. sqlite:///gateway.sqlite3")
        return cls(str(Path(path).resolve()), ttl)

    def __str__(self):
        return f"SQLite at {self.path}"

    def get(self, response_id):
        """The live entry for an id, or None."""
        try:
            row = self._db().execute(SELECT, (response_id, time.time())).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc
        return _entry(row) if row else None

    def record(self, response_id, provider, body):
        """Store the Response unless its status would regress; return what is stored."""
        now = time.time()
        status = body.get("status")
        params = {
            "id": response_id, "provider": provider, "status": status, "rank": rank(status),
            "body": json.dumps(body), "now": now, "expires_at": now + self.ttl,
        }
        db = self._db()
        try:
            # BEGIN IMMEDIATE takes the write lock first, so the SELECT sees our own write.
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(RECORD, params)
                row = db.execute(SELECT, (response_id, now)).fetchone()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if now >= self._next_purge:
                self._next_purge = now + PURGE_EVERY
                db.execute("DELETE FROM responses WHERE expires_at <= ?", (now,))
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc
        return _entry(row)

    def _db(self):
        """This thread's connection, opened on first use in this process."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
            local.pid = os.getpid()
        return local.db


def _entry(row):
    provider, status, body, created_at, updated_at = row
    return Entry(provider, status, json.loads(body), created_at, updated_at)
