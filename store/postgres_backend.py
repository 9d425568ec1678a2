"""The PostgreSQL store: one database shared by every worker of every host, durable.

psycopg 3. Each process keeps its own connections, opened on first use (never in
gunicorn's master, whose connections the forked workers must not share), at most
`pool_size` at once, as the SQLite store does: a call takes an idle one or opens one,
and gives it back unless it failed. An idle connection is checked before use, with no
round trip (_alive), so one that a restart of the database closed is dropped, not
used; and since a call that finds none idle connects there and then, service resumes
the moment the database is back (a pool that reconnects in the background backs off
for seconds more). Under gevent,
psycopg waits for the server through the hub (supported since 3.1.14), so a slow
query or a held lock blocks only the greenlet that made the call; a wait for a free
connection does the same. A statement waits at most STATEMENT_TIMEOUT, a connection
CONNECT_TIMEOUT: then StoreError (a 503), and the next call tries again. A call waits
for a free connection while the database keeps answering (busy: a burst of thousands of
runs queues, it does not fail), up to BUSY_WAIT; once the database has answered nothing
for POOL_WAIT it is down or stuck, and the waiting calls fail.

The compare-and-set in record() is one INSERT ... ON CONFLICT DO UPDATE ... WHERE,
atomic in PostgreSQL as in SQLite (the two share its rule, store.may_replace). The
schema is made at the first connection and upgraded in place, one step of MIGRATIONS
at a time, under an advisory lock so that one process upgrades while the others wait.
"""

import json
import os
import select
import threading
import time
import weakref
from urllib.parse import urlsplit

import psycopg
from psycopg.pq import TransactionStatus

from store import EVENTS_KEEP, Entry, Kept, StoreError, rank
from store.sql_conversations import SQLConversations
from store.sql_queue import SQLQueue

CONNECT_TIMEOUT = 5  # seconds to open a connection
STATEMENT_TIMEOUT = "5s"  # how long a statement may run or wait for a lock
POOL_WAIT = 5.0  # seconds with no answer from the database before a waiting call fails
BUSY_WAIT = 30.0  # seconds a call waits at most for a connection of a busy database
PURGE_EVERY = 3600.0  # seconds between deletions of expired rows, per process
PURGE_BATCH = 200  # rows one write may purge
SCHEMA_LOCK = 7_262_001  # the advisory lock an upgrade holds
IDLE = TransactionStatus.IDLE  # a connection in no transaction, nor in a statement

# Each step brings the schema one version up; a database at version N has run the first N.
MIGRATIONS = (
    # 1: responses, the events of the gateway's runs, and the input of creates.
    """
    CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        status TEXT,
        rank SMALLINT NOT NULL,
        body TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION,
        owner TEXT
    );
    CREATE INDEX responses_expiry ON responses (expires_at);
    CREATE TABLE events (
        id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (id, seq)
    );
    CREATE TABLE event_logs (
        id TEXT PRIMARY KEY,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX event_logs_expiry ON event_logs (expires_at);
    CREATE TABLE inputs (
        id TEXT PRIMARY KEY,
        items TEXT NOT NULL,
        previous TEXT,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX inputs_expiry ON inputs (expires_at);
    """,
    # 2: conversations, and the conversation a create's input belongs to.
    """
    ALTER TABLE inputs ADD COLUMN conversation TEXT;
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        owner TEXT,
        metadata TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        next BIGINT NOT NULL DEFAULT 0,
        count BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX conversations_expiry ON conversations (expires_at);
    CREATE TABLE conversation_items (
        conversation TEXT NOT NULL,
        position BIGINT NOT NULL,
        id TEXT NOT NULL,
        item TEXT NOT NULL,
        PRIMARY KEY (conversation, position)
    );
    CREATE UNIQUE INDEX conversation_item_ids ON conversation_items (conversation, id);
    CREATE TABLE conversation_turns (
        response_id TEXT PRIMARY KEY,
        expires_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX conversation_turns_expiry ON conversation_turns (expires_at);
    """,
    # 3: the queue of work due at a time (webhooks.py).
    """
    CREATE TABLE queue (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        due_at DOUBLE PRECISION NOT NULL,
        attempts INTEGER NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE INDEX queue_due ON queue (kind, due_at);
    CREATE INDEX queue_expiry ON queue (expires_at);
    """,
)

# As the SQLite store's RECORD (store/sqlite_backend.py): may_replace(strict=run), and "an
# expired row is as good as none"; rank 3 is a delete's tombstone.
RECORD = """
INSERT INTO responses (id, provider, status, rank, body, created_at, updated_at, expires_at,
                       heartbeat_at, owner)
VALUES (%(id)s, %(provider)s, %(status)s, %(rank)s, %(body)s, %(now)s, %(now)s,
        %(expires_at)s, %(heartbeat)s, %(owner)s)
ON CONFLICT (id) DO UPDATE SET
    provider = excluded.provider,
    status = excluded.status,
    rank = excluded.rank,
    body = excluded.body,
    updated_at = excluded.updated_at,
    created_at = CASE WHEN responses.expires_at <= %(now)s
        THEN excluded.created_at ELSE responses.created_at END,
    expires_at = CASE WHEN responses.expires_at <= %(now)s
        THEN excluded.expires_at ELSE responses.expires_at END,
    heartbeat_at = CASE WHEN %(run)s OR responses.expires_at <= %(now)s
        THEN excluded.heartbeat_at ELSE responses.heartbeat_at END,
    owner = CASE WHEN responses.expires_at <= %(now)s
        THEN excluded.owner ELSE responses.owner END
WHERE responses.expires_at <= %(now)s
   OR (responses.rank < 3 AND (
          excluded.rank = 3
       OR (responses.status IS NOT DISTINCT FROM excluded.status
           AND NOT (%(run)s AND excluded.rank = 2))
       OR (responses.rank < 2 AND excluded.rank >= responses.rank)))
RETURNING provider, status, body, created_at, updated_at, heartbeat_at, owner
"""
SELECT = """
SELECT provider, status, body, created_at, updated_at, heartbeat_at, owner FROM responses
WHERE id = %s AND expires_at > %s
"""
STATUSES = "SELECT id, status FROM responses WHERE id = ANY(%s) AND expires_at > %s"
HEARTBEAT = """
UPDATE responses SET heartbeat_at = %s
WHERE id = ANY(%s) AND rank < 2 AND heartbeat_at IS NOT NULL
"""
KEEP_INPUT = """
INSERT INTO inputs (id, items, previous, expires_at, conversation) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (id) DO NOTHING
"""
INPUT = "SELECT items, previous, conversation FROM inputs WHERE id = %s AND expires_at > %s"
APPEND_EVENT = """
INSERT INTO events (id, seq, event)
SELECT %(id)s, %(seq)s, %(event)s
WHERE NOT EXISTS (SELECT 1 FROM responses WHERE id = %(id)s AND rank = 3)
ON CONFLICT DO NOTHING
"""
KEEP_EVENTS = """
INSERT INTO event_logs (id, expires_at) VALUES (%s, %s)
ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at
"""
EVENTS = """
SELECT event FROM events
WHERE id = %(id)s AND seq > %(after)s
  AND EXISTS (SELECT 1 FROM event_logs WHERE id = %(id)s AND expires_at > %(now)s)
ORDER BY seq
"""
FORGET = ("DELETE FROM inputs WHERE id = %s", "DELETE FROM events WHERE id = %s",
          "DELETE FROM event_logs WHERE id = %s")  # what a delete's tombstone drops
# The hourly purge, in steps of a batch each, carried by writes (as SQLite's PURGE).
PURGE = (
    "DELETE FROM responses WHERE id IN "
    "(SELECT id FROM responses WHERE expires_at <= %(now)s LIMIT %(batch)s)",
    "DELETE FROM inputs WHERE id IN "
    "(SELECT id FROM inputs WHERE expires_at <= %(now)s LIMIT %(batch)s)",
    "DELETE FROM events WHERE (id, seq) IN (SELECT events.id, events.seq FROM event_logs "
    "JOIN events ON events.id = event_logs.id WHERE event_logs.expires_at <= %(now)s "
    "LIMIT %(batch)s)",
    "DELETE FROM event_logs WHERE id IN "
    "(SELECT id FROM event_logs WHERE expires_at <= %(now)s LIMIT %(batch)s)",
    "DELETE FROM conversation_items WHERE (conversation, position) IN (SELECT "
    "conversation_items.conversation, conversation_items.position FROM conversations JOIN "
    "conversation_items ON conversation_items.conversation = conversations.id "
    "WHERE conversations.expires_at <= %(now)s LIMIT %(batch)s)",
    "DELETE FROM conversations WHERE id IN "
    "(SELECT id FROM conversations WHERE expires_at <= %(now)s LIMIT %(batch)s)",
    "DELETE FROM conversation_turns WHERE response_id IN "
    "(SELECT response_id FROM conversation_turns WHERE expires_at <= %(now)s "
    "LIMIT %(batch)s)",
    "DELETE FROM queue WHERE (kind, key) IN "
    "(SELECT kind, key FROM queue WHERE expires_at <= %(now)s LIMIT %(batch)s)",
)


class PostgresStore:
    """Responses in a PostgreSQL database, shared by every process and host."""

    placeholder = "%s"  # how its statements take parameters (sql_conversations.py)

    def __init__(self, url, ttl, conversation_ttl=None, pool_size=10):
        self.url, self.ttl, self.pool_size = url, ttl, max(1, pool_size)
        self.conversations = SQLConversations(self, conversation_ttl or ttl, " FOR UPDATE")
        self.queue = SQLQueue(self, " FOR UPDATE SKIP LOCKED")
        self._for_this_process()
        forked = weakref.WeakMethod(self._for_this_process)
        os.register_at_fork(after_in_child=lambda: forked() and forked()())
        try:  # made or upgraded now if the database is up; else at the first call
            self._upgrade()
        except StoreError:
            pass

    @classmethod
    def from_url(cls, url, ttl, conversation_ttl=None, pool_size=10):
        """postgresql://user:password@host:port/database (or postgres://), as libpq reads it."""
        if not urlsplit(url).path.strip("/") and "dbname=" not in url:
            raise ValueError("must name a database, e.g. postgresql://user@host/gateway")
        return cls(url, ttl, conversation_ttl, pool_size)

    def __str__(self):
        parts = urlsplit(self.url)
        return f"PostgreSQL at {parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"

    def _for_this_process(self):
        self._idle = []  # this process's connections not in use
        self._slots = threading.BoundedSemaphore(self.pool_size)  # gevent's, once patched
        self._answered = time.monotonic()  # when the database last answered a call here
        self._upgraded = False
        self._next_purge, self._purging = 0.0, None  # see PURGE
        self._purge_lock = threading.Lock()  # one purging call a process at a time

    def local_secret(self):
        """None: every copy of the database would hold a secret kept in it (set
        GATEWAY_SECRET)."""
        return None

    def get(self, response_id):
        """The live entry for an id, or None."""
        row = self._use(lambda db: db.execute(SELECT, (response_id, time.time())).fetchone())
        return _entry(row) if row else None

    def record(self, response_id, provider, body, run=False, owner=None):
        """Store the Response unless its status would regress; return what is stored."""
        now, status = time.time(), body.get("status")
        params = {"id": response_id, "provider": provider, "status": status,
                  "rank": rank(status), "body": json.dumps(body), "now": now,
                  "expires_at": now + self.ttl, "run": run,
                  "heartbeat": now if run else None, "owner": owner}

        def write(db):
            if params["rank"] == 3:  # deleted: its input and events go too, all at once
                with db.transaction():
                    row = db.execute(RECORD, params).fetchone()
                    for statement in FORGET if row else ():
                        db.execute(statement, (response_id,))
            else:  # one statement in autocommit: atomic by itself, and one round trip
                row = db.execute(RECORD, params).fetchone()
            # A refused write returns no row: answer what is stored (a write since, if any,
            # moved it only forward).
            return row or db.execute(SELECT, (response_id, now)).fetchone()

        entry = _entry(self._use(write))
        self._purge_batch(now)
        return entry

    def statuses(self, response_ids):
        """{id: status} for those of `response_ids` that are stored."""
        ids = list(response_ids)
        rows = self._use(lambda db: db.execute(STATUSES, (ids, time.time())).fetchall())
        return dict(rows)

    def heartbeat(self, response_ids):
        """Stamp the heartbeat of those gateway runs among `response_ids` still going."""
        ids = list(response_ids)
        self._use(lambda db: db.execute(HEARTBEAT, (time.time(), ids)))

    def keep_input(self, response_id, items, previous=None, conversation=None):
        """Keep a create's input items (the first call for an id counts)."""
        params = (response_id, json.dumps(items), previous, time.time() + self.ttl, conversation)
        self._use(lambda db: db.execute(KEEP_INPUT, params))

    def input_items(self, response_id):
        """What keep_input kept for an id (a Kept), or None."""
        row = self._use(lambda db: db.execute(INPUT, (response_id, time.time())).fetchone())
        return Kept(json.loads(row[0]), row[1], row[2]) if row else None

    def append_events(self, batch):
        """Log runs' events: for each (response_id, first, events), numbered from `first`."""
        batch = [(rid, first, list(events)) for rid, first, events in batch if events]
        if not batch:
            return
        expires_at = time.time() + EVENTS_KEEP
        rows = [{"id": rid, "seq": first + i, "event": json.dumps(event)}
                for rid, first, events in batch for i, event in enumerate(events)]

        def write(db):
            with db.transaction(), db.cursor() as cursor:  # every event of the batch, or none
                cursor.executemany(APPEND_EVENT, rows)
                cursor.executemany(KEEP_EVENTS, [(rid, expires_at) for rid, _, _ in batch])

        self._use(write)

    def events(self, response_id, after):
        """The run's logged events numbered after `after`, in order."""
        params = {"id": response_id, "after": after, "now": time.time()}
        rows = self._use(lambda db: db.execute(EVENTS, params).fetchall())
        return [json.loads(row[0]) for row in rows]

    # For sql_conversations.py.

    def change(self, change, *args):
        """Run change(db, now, *args) in one transaction."""
        def run(db):
            with db.transaction():
                return change(db, time.time(), *args)
        return self._use(run)

    def reading(self, read, *args):
        """Run read(db, *args) on a connection of this process's pool."""
        return self._use(lambda db: read(db, *args))

    def _use(self, call):
        """Run call(connection) on a connection of this process's; StoreError if the
        database fails (the connection is then dropped)."""
        self._wait_for_slot()
        db = None
        try:
            self._upgrade()
            db = self._take()
            self._answered = time.monotonic()  # upgraded and connected: it answers
            answer = call(db)
            self._answered = time.monotonic()
            return answer
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store: {_first_line(exc)}") from exc
        finally:
            if db is not None:
                self._give_back(db)
            self._slots.release()

    def _wait_for_slot(self):
        """Take one of the `pool_size` slots: wait while the database answers calls (they
        free slots), fail once it has answered none for POOL_WAIT, or after BUSY_WAIT."""
        started = time.monotonic()
        while not self._slots.acquire(timeout=0.5):
            now = time.monotonic()
            if now - max(started, self._answered) > POOL_WAIT or now - started > BUSY_WAIT:
                raise StoreError(f"PostgreSQL store: no connection free within "
                                 f"{now - started:.0f}s")

    def _give_back(self, db):
        """Keep a connection for the next call if it is open and idle (a call cut off
        mid-statement, or a failed one, may have left it otherwise); else close it."""
        if not (db.closed or db.broken) and db.info.transaction_status == IDLE:
            self._idle.append(db)
        else:
            db.close()

    def _take(self):
        """An idle connection that is still open, else a new one."""
        while self._idle:
            db = self._idle.pop()  # atomic, as is append(): no lock needed
            if _alive(db):
                return db
            db.close()
        return psycopg.connect(self.url, **_connect_options())

    def _upgrade(self):
        """Bring the database to the last of MIGRATIONS, keeping what it holds; the first
        process to get the advisory lock does it, the others then find it done."""
        if self._upgraded:
            return
        try:
            with psycopg.connect(self.url, **_connect_options()) as db, db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                db.execute("CREATE TABLE IF NOT EXISTS gateway_schema (version INTEGER NOT NULL)")
                row = db.execute("SELECT version FROM gateway_schema").fetchone()
                version = row[0] if row else 0
                for step in MIGRATIONS[version:]:
                    db.execute(step)
                if row is None:
                    db.execute("INSERT INTO gateway_schema (version) VALUES (%s)",
                               (len(MIGRATIONS),))
                elif version < len(MIGRATIONS):
                    db.execute("UPDATE gateway_schema SET version = %s", (len(MIGRATIONS),))
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL store: {_first_line(exc)}") from exc
        self._upgraded = True

    def _purge_batch(self, now):
        """One batch of what has expired, if a purge is due (see PURGE) and no other call
        of this process's is purging; a failure waits for the next write."""
        if now < self._next_purge or not self._purge_lock.acquire(blocking=False):
            return
        try:
            if self._purging is None:
                self._purging = [now, 0]  # when it started, its step
            started, step = self._purging
            params = {"now": started, "batch": PURGE_BATCH}
            deleted = self._use(lambda db: db.execute(PURGE[step], params).rowcount)
            if deleted < PURGE_BATCH and step + 1 < len(PURGE):
                self._purging[1] += 1
            elif deleted < PURGE_BATCH:
                self._purging, self._next_purge = None, now + PURGE_EVERY
        except StoreError:
            pass
        finally:
            self._purge_lock.release()


def _alive(db):
    """Whether an idle connection is still open, asked without a round trip: an idle
    connection has nothing to read unless the server has said goodbye (a restart says so
    to every connection) or closed the socket."""
    return not (db.closed or db.broken) and not select.select([db.fileno()], [], [], 0)[0]


def _connect_options():
    """Every connection: autocommit (a transaction only where asked for), and bounded waits."""
    return {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT}"}


def _first_line(exc):
    """What failed, in a line (psycopg's messages add context lines and hints)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _entry(row):
    provider, status, body, created_at, updated_at, heartbeat_at, owner = row
    return Entry(provider, status, json.loads(body), created_at, updated_at, heartbeat_at, owner)
