"""The SQLite store: one file on this host, shared by every gunicorn worker.

WAL mode lets readers go on while one writer writes; SQLite's own file locks
make the one-statement compare-and-set in record() atomic across processes.
Writers also queue on a lock of our own (see record()), for latency, not safety.
Each process keeps its own connections, opened on first use (never in
gunicorn's master, whose connections the forked workers must not share); a call
takes an idle one or opens one, so a process holds as many as it makes calls at
once: a few in a gevent worker, where calls run one at a time but for writes
that wait for another process's (see _blocking), at most its threads in a
gthread worker.
"""

import fcntl
import json
import os
import secrets
import sqlite3
import threading
import time
import weakref
from contextlib import closing, contextmanager
from pathlib import Path

from gevent import get_hub, monkey

from store import EVENTS_KEEP, Entry, Kept, StoreError, rank
from store.sql_conversations import SQLConversations
from store.sql_queue import SQLQueue

BUSY_TIMEOUT = 5.0  # seconds a write waits for another process's write to finish
NEEDS = (3, 35)  # UPSERT ... RETURNING; json_each() too (built in from 3.38, usually before)
PURGE_EVERY = 3600.0  # seconds between deletions of expired rows, per process

SCHEMA_VERSION = 4  # PRAGMA user_version of a file this code made or upgraded
# Every statement may run on a file at any version: a new one, or one an older release made.
SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    status TEXT,
    rank INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    heartbeat_at REAL,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS responses_expiry ON responses (expires_at);
CREATE TABLE IF NOT EXISTS events (
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    expires_at REAL NOT NULL,  -- unused since version 2: a run's log expires in event_logs
    PRIMARY KEY (id, seq)
);
CREATE TABLE IF NOT EXISTS event_logs (
    id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS event_logs_expiry ON event_logs (expires_at);
CREATE TABLE IF NOT EXISTS inputs (
    id TEXT PRIMARY KEY,
    items TEXT NOT NULL,
    previous TEXT,
    expires_at REAL NOT NULL,
    conversation TEXT
);
CREATE INDEX IF NOT EXISTS inputs_expiry ON inputs (expires_at);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT,
    metadata TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    next INTEGER NOT NULL DEFAULT 0,  -- the position the next item takes
    count INTEGER NOT NULL DEFAULT 0  -- how many items it holds
);
CREATE INDEX IF NOT EXISTS conversations_expiry ON conversations (expires_at);
CREATE TABLE IF NOT EXISTS conversation_items (
    conversation TEXT NOT NULL,
    position INTEGER NOT NULL,
    id TEXT NOT NULL,
    item TEXT NOT NULL,  -- the item but its id, as JSON
    PRIMARY KEY (conversation, position)
);
CREATE UNIQUE INDEX IF NOT EXISTS conversation_item_ids ON conversation_items (conversation, id);
CREATE TABLE IF NOT EXISTS conversation_turns (  -- responses whose items were appended
    response_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS conversation_turns_expiry ON conversation_turns (expires_at);
CREATE TABLE IF NOT EXISTS queue (  -- sql_queue.py
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    due_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS queue_due ON queue (kind, due_at);
CREATE INDEX IF NOT EXISTS queue_expiry ON queue (expires_at);
"""
# A file made before the gateway ran responses itself, scoped them to their keys, or kept
# conversations, lacks the columns for it.
ADD_COLUMNS = {("responses", "heartbeat_at"): "ALTER TABLE responses ADD COLUMN heartbeat_at REAL",
               ("responses", "owner"): "ALTER TABLE responses ADD COLUMN owner TEXT",
               ("inputs", "conversation"): "ALTER TABLE inputs ADD COLUMN conversation TEXT"}
# Version 1 kept each event's expiry with the event, and rewrote them all every round.
FROM_VERSION_1 = """
INSERT OR IGNORE INTO event_logs (id, expires_at)
SELECT id, MAX(expires_at) FROM events GROUP BY id
"""

# One statement, so no other writer can come between the check and the write:
# the WHERE clause is may_replace(strict=:run), plus "an expired row is as good as none"
# (rank 3 is a delete's tombstone).
RECORD = """
INSERT INTO responses (id, provider, status, rank, body, created_at, updated_at, expires_at,
                       heartbeat_at, owner)
VALUES (:id, :provider, :status, :rank, :body, :now, :now, :expires_at, :heartbeat, :owner)
ON CONFLICT (id) DO UPDATE SET
    provider = excluded.provider,
    status = excluded.status,
    rank = excluded.rank,
    body = excluded.body,
    updated_at = excluded.updated_at,
    created_at = CASE WHEN responses.expires_at <= :now
        THEN excluded.created_at ELSE responses.created_at END,
    expires_at = CASE WHEN responses.expires_at <= :now
        THEN excluded.expires_at ELSE responses.expires_at END,
    heartbeat_at = CASE WHEN :run OR responses.expires_at <= :now
        THEN excluded.heartbeat_at ELSE responses.heartbeat_at END,
    owner = CASE WHEN responses.expires_at <= :now
        THEN excluded.owner ELSE responses.owner END
WHERE responses.expires_at <= :now
   OR (responses.rank < 3 AND (
          excluded.rank = 3
       OR (responses.status IS excluded.status AND NOT (:run AND excluded.rank = 2))
       OR (responses.rank < 2 AND excluded.rank >= responses.rank)))
RETURNING provider, status, body, created_at, updated_at, heartbeat_at, owner
"""
SELECT = """
SELECT provider, status, body, created_at, updated_at, heartbeat_at, owner FROM responses
WHERE id = ? AND expires_at > ?
"""
# Many ids in one parameter, as a JSON array: no limit on how many.
STATUSES = """
SELECT id, status FROM responses
WHERE id IN (SELECT value FROM json_each(?)) AND expires_at > ?
"""
KEEP_INPUT = """
INSERT OR IGNORE INTO inputs (id, items, previous, expires_at, conversation)
VALUES (?, ?, ?, ?, ?)
"""
INPUT = "SELECT items, previous, conversation FROM inputs WHERE id = ? AND expires_at > ?"
# A deleted response's tombstone (rank 3) takes no more events: a run's last ones may come
# after the delete.
APPEND_EVENT = """
INSERT OR IGNORE INTO events (id, seq, event, expires_at)
SELECT :id, :seq, :event, :expires_at
WHERE NOT EXISTS (SELECT 1 FROM responses WHERE id = :id AND rank = 3)
"""
# A run's log is kept EVENTS_KEEP after its last event: one row a run, whatever its length.
KEEP_EVENTS = """
INSERT INTO event_logs (id, expires_at) VALUES (?, ?)
ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at
"""
EVENTS = """
SELECT event FROM events
WHERE id = :id AND seq > :after
  AND EXISTS (SELECT 1 FROM event_logs WHERE id = :id AND expires_at > :now)
ORDER BY seq
"""
# The hourly purge, in steps, each by an index. A write that finds a purge due carries one
# batch of its current step, so no write pays for more than a batch, however much expired.
PURGE = (
    "DELETE FROM responses WHERE id IN "
    "(SELECT id FROM responses WHERE expires_at <= :now LIMIT :batch)",
    "DELETE FROM inputs WHERE id IN "
    "(SELECT id FROM inputs WHERE expires_at <= :now LIMIT :batch)",
    "DELETE FROM events WHERE rowid IN (SELECT events.rowid FROM event_logs "
    "JOIN events ON events.id = event_logs.id WHERE event_logs.expires_at <= :now "
    "LIMIT :batch)",
    "DELETE FROM event_logs WHERE id IN "
    "(SELECT id FROM event_logs WHERE expires_at <= :now LIMIT :batch)",
    "DELETE FROM conversation_items WHERE rowid IN (SELECT conversation_items.rowid FROM "
    "conversations JOIN conversation_items ON conversation_items.conversation = "
    "conversations.id WHERE conversations.expires_at <= :now LIMIT :batch)",
    "DELETE FROM conversations WHERE id IN "
    "(SELECT id FROM conversations WHERE expires_at <= :now LIMIT :batch)",
    "DELETE FROM conversation_turns WHERE response_id IN "
    "(SELECT response_id FROM conversation_turns WHERE expires_at <= :now LIMIT :batch)",
    "DELETE FROM queue WHERE rowid IN "
    "(SELECT rowid FROM queue WHERE expires_at <= :now LIMIT :batch)",
)
PURGE_BATCH = 200  # rows one write may purge
HEARTBEAT = """
UPDATE responses SET heartbeat_at = ?
WHERE id IN (SELECT value FROM json_each(?)) AND rank < 2 AND heartbeat_at IS NOT NULL
"""


class SQLiteStore:
    """Responses in a SQLite file, safe across threads and processes."""

    placeholder = "?"  # how its statements take parameters (sql_conversations.py)

    def __init__(self, path, ttl, conversation_ttl=None):
        self.path, self.ttl = path, ttl
        self.conversations = SQLConversations(self, conversation_ttl or ttl)
        self.queue = SQLQueue(self)
        self._for_this_process()
        # A forked process starts with its own connections, lock file and lock: a thread of
        # the parent may hold the lock as it forks, and would never release it in the child.
        forked = weakref.WeakMethod(self._for_this_process)
        os.register_at_fork(after_in_child=lambda: forked() and forked()())
        if sqlite3.sqlite_version_info < NEEDS:
            raise StoreError(f"the SQLite store needs SQLite {'.'.join(map(str, NEEDS))} or "
                             f"newer; this Python has {sqlite3.sqlite_version}")
        try:
            _owner_only(path)
        except OSError as exc:
            raise StoreError(f"cannot open the SQLite store at {path}: {exc}") from exc
        try:
            with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT,
                                         isolation_level=None)) as db:
                db.execute("PRAGMA journal_mode=WAL")  # stays set in the file
                _upgrade(db)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite store at {path}: {exc}") from exc

    @classmethod
    def from_url(cls, url, ttl, conversation_ttl=None):
        """sqlite:///relative/path or sqlite:////absolute/path, as SQLAlchemy spells them."""
        path = url.removeprefix("sqlite:///")
        if not path or path == url or path == ":memory:":
            raise ValueError("must name a file, e.g. sqlite:///gateway.sqlite3")
        return cls(str(Path(path).resolve()), ttl, conversation_ttl)

    def __str__(self):
        return f"SQLite at {self.path}"

    def _for_this_process(self):
        self._idle = []  # this process's connections not in use
        self._write_lock = threading.Lock()  # one writer per process at a time (gevent's, patched)
        self._lock_fd = None  # this process's descriptor of the lock file
        self._next_purge, self._purging = 0.0, None  # see PURGE

    def local_secret(self):
        """A secret of this host's, kept in a file of its own beside the database (made
        once, readable by its owner only), for keying owner ids where the operator set
        none: a copy of the database alone does not hold it."""
        path = f"{self.path}.secret"
        if not os.path.exists(path):
            draft = f"{path}.{os.getpid()}"
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_hex(32))
            try:
                os.link(draft, path)  # whole or not at all; a process that lost the race
            except FileExistsError:  # reads the winner's
                pass
            finally:
                os.unlink(draft)
        with open(path, "rb") as secret:
            return secret.read().strip()

    def get(self, response_id):
        """The live entry for an id, or None."""
        return self._get(response_id)

    def record(self, response_id, provider, body, run=False, owner=None):
        """Store the Response unless its status would regress; return what is stored."""
        with self._write_lock:
            return self._in_turn(self._record, response_id, provider, body, run, owner)

    def statuses(self, response_ids):
        """{id: status} for those of `response_ids` that are stored."""
        return self._statuses(list(response_ids))

    def heartbeat(self, response_ids):
        """Stamp the heartbeat of those gateway runs among `response_ids` still going."""
        with self._write_lock:
            self._in_turn(self._heartbeat, list(response_ids))

    def keep_input(self, response_id, items, previous=None, conversation=None):
        """Keep a create's input items (the first call for an id counts)."""
        with self._write_lock:
            self._in_turn(self._write, KEEP_INPUT, (response_id, json.dumps(items), previous,
                                                    time.time() + self.ttl, conversation))

    def append_events(self, batch):
        """Log runs' events: for each (response_id, first, events), numbered from `first`."""
        batch = [(rid, first, list(events)) for rid, first, events in batch if events]
        if batch:
            with self._write_lock:
                self._in_turn(self._append_events, batch)

    def events(self, response_id, after):
        """The run's logged events numbered after `after`, in order."""
        return self._events(response_id, after)

    def input_items(self, response_id):
        """What keep_input kept for an id (a Kept), or None."""
        row = self._read(INPUT, (response_id, time.time()))
        return Kept(json.loads(row[0]), row[1], row[2]) if row else None

    def change(self, change, *args):
        """Run change(db, now, *args) in one transaction, in this store's write turn; a
        change reads, then writes, so it takes the write lock up front (IMMEDIATE): no
        other writer can overtake its read."""
        with self._write_lock:
            return self._in_turn(self._transaction, change, *args)

    def reading(self, read, *args):
        """Run read(db, *args) on a connection of this process's."""
        try:
            with self._connection() as db:
                return read(db, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc

    def _transaction(self, change, *args):
        try:
            with self._connection() as db:
                with db:
                    db.execute("BEGIN IMMEDIATE")
                    return change(db, time.time(), *args)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc

    # Writers queue on locks that wake each the moment it is its turn: this process's
    # threads (or greenlets) on _write_lock, the processes on a flock() of a file beside
    # the database. Left to contend for SQLite's own lock, the losers sleep in its busy
    # handler's growing steps (up to 100 ms each): at 32 connections p99 was over a second.

    def _in_turn(self, write, *args):
        """Run a write in this store's turn, across processes: here if no other process is
        writing, else where waiting for it blocks nothing else (see _blocking)."""
        try:
            lock = self._lock_file()
        except OSError as exc:
            raise StoreError(f"SQLite store: cannot open {self.path}.lock: {exc}") from exc
        try:
            return self._locked(lock, fcntl.LOCK_NB, write, *args)
        except BlockingIOError:  # another process's turn: wait for it off the hub
            return _blocking(self._locked, lock, 0, write, *args)

    def _locked(self, lock, flags, write, *args):
        """Take the flock() that queues the processes' writers (LOCK_NB: or raise
        BlockingIOError at once), then run the write."""
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | flags)
        except BlockingIOError:
            raise
        except OSError as exc:
            raise StoreError(f"SQLite store: cannot lock {self.path}.lock: {exc}") from exc
        try:
            return write(*args)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

    def _get(self, response_id):
        row = self._read(SELECT, (response_id, time.time()))
        return _entry(row) if row else None

    def _statuses(self, response_ids):
        try:
            with self._connection() as db:
                rows = db.execute(STATUSES, (json.dumps(response_ids), time.time()))
                return dict(rows.fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc

    def _append_events(self, batch):
        expires_at = time.time() + EVENTS_KEEP
        rows = [{"id": response_id, "seq": first + i, "event": json.dumps(event),
                 "expires_at": expires_at}
                for response_id, first, events in batch for i, event in enumerate(events)]
        try:
            with self._connection() as db:
                with db:  # one transaction: every event of the batch, or none
                    db.execute("BEGIN")
                    db.executemany(APPEND_EVENT, rows)
                    db.executemany(KEEP_EVENTS, [(rid, expires_at) for rid, _, _ in batch])
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc

    def _events(self, response_id, after):
        try:
            with self._connection() as db:
                rows = db.execute(EVENTS, {"id": response_id, "after": after,
                                           "now": time.time()}).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc
        return [json.loads(row[0]) for row in rows]

    def _purge(self):
        """Purge all that has expired now, one batch a write (as writes do, see PURGE)."""
        self._next_purge = 0.0
        while True:
            with self._write_lock:
                if self._in_turn(self._purge_batch, time.time()):
                    return

    def _purge_batch(self, now):
        """Delete one batch of what has expired, if a purge is due; True once it is done
        (or none was due). Every step deletes what expired by the purge's first batch."""
        if now < self._next_purge:
            return True
        if self._purging is None:
            self._purging = [now, 0]  # when it started, its step
        started, step = self._purging
        try:
            with self._connection() as db:
                deleted = db.execute(PURGE[step], {"now": started,
                                                   "batch": PURGE_BATCH}).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc
        if deleted == PURGE_BATCH:
            return False
        if step + 1 < len(PURGE):
            self._purging[1] += 1
            return False
        self._purging, self._next_purge = None, now + PURGE_EVERY
        return True

    def _heartbeat(self, response_ids):
        self._write(HEARTBEAT, (time.time(), json.dumps(response_ids)))

    def _write(self, statement, params):
        try:
            with self._connection() as db:
                db.execute(statement, params)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc

    def _read(self, statement, params):
        try:
            with self._connection() as db:
                return db.execute(statement, params).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc

    def _record(self, response_id, provider, body, run, owner):
        now = time.time()
        status = body.get("status")
        params = {
            "id": response_id, "provider": provider, "status": status, "rank": rank(status),
            "body": json.dumps(body), "now": now, "expires_at": now + self.ttl,
            "run": run, "heartbeat": now if run else None, "owner": owner,
        }
        try:
            with self._connection() as db:
                # One statement, in autocommit: atomic by itself, and RETURNING gives the
                # row as written. A refused write returns no row; the row as stored is read
                # then, still under the write locks, so no other writer of ours comes between.
                rows = db.execute(RECORD, params).fetchall()
                row = rows[0] if rows else db.execute(SELECT, (response_id, now)).fetchone()
                if rows and params["rank"] == 3:  # deleted: its input and events go too
                    db.execute("DELETE FROM inputs WHERE id = ?", (response_id,))
                    db.execute("DELETE FROM events WHERE id = ?", (response_id,))
                    db.execute("DELETE FROM event_logs WHERE id = ?", (response_id,))
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store: {exc}") from exc
        self._purge_batch(now)  # still in this write's turn
        return _entry(row)

    def _lock_file(self):
        """This process's descriptor of the lock file, opened on first use."""
        if self._lock_fd is None:
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        return self._lock_fd

    @contextmanager
    def _connection(self):
        """A connection of this process's for one call: an idle one, or a new one."""
        try:
            db = self._idle.pop()  # atomic, as is append(): no lock needed
        except IndexError:
            # Used by whichever thread takes it next, one at a time.
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None,
                                 check_same_thread=False)
            # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a crash of
            # the process loses nothing; a power cut may lose the last writes, which
            # costs only the shortcut (those ids are found again by probing).
            db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield db
        finally:
            self._idle.append(db)


def _blocking(call, *args):
    """Run a call that may block the whole process for long where it blocks only itself.

    Waiting in flock() for another process's write holds the process until it
    returns. In gevent's cooperative worker that would stall every stream the
    worker holds, so there the wait (and the write after it) runs in one of
    gevent's native threads; under threads it runs here. A write whose turn is
    free, and a read (WAL readers wait for no writer), take a fraction of a
    millisecond and run in place: a native thread's hand-over would cost more.
    """
    if monkey.is_module_patched("threading"):
        return get_hub().threadpool.apply(call, args)
    return call(*args)


def _owner_only(path):
    """Make the database file readable by its owner only before SQLite opens it: SQLite
    gives its -wal and -shm files the database's mode. Files an earlier release left
    readable to others are narrowed too."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for suffix in ("", "-wal", "-shm", ".lock", ".secret"):
        try:
            if os.stat(path + suffix).st_mode & 0o077:
                os.chmod(path + suffix, 0o600)
        except FileNotFoundError:
            pass


def _upgrade(db):
    """Bring a file of any earlier version (or a new one) to SCHEMA_VERSION, in one
    transaction, keeping what it holds."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return  # nothing to do, and no write lock taken for it
    db.execute("BEGIN IMMEDIATE")  # one process upgrades; the others wait, then see it done
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            had_logs = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'event_logs'").fetchone()
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            for (table, column), add in ADD_COLUMNS.items():
                if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(add)
            if not had_logs:
                db.execute(FROM_VERSION_1)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _entry(row):
    provider, status, body, created_at, updated_at, heartbeat_at, owner = row
    return Entry(provider, status, json.loads(body), created_at, updated_at, heartbeat_at, owner)
