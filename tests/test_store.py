"""The response store's contract, checked against every backend: SQLite in a temp dir, a
real redis-server and a real PostgreSQL on 127.0.0.1."""

import threading
import time
import uuid

import hypothesis
import pytest
from hypothesis import strategies as st

from gateway_process import free_port
from racers import in_processes, record_statuses
from store import StoreError, may_replace, open_store
from store.sqlite_backend import SCHEMA_VERSION

STATUSES = [None, "queued", "in_progress", "cancelled", "completed", "failed", "incomplete",
            "deleted"]


@pytest.fixture(params=["sqlite", "redis", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.sqlite3"
    if request.param == "postgresql":
        return request.getfixturevalue("database_url")
    return request.getfixturevalue("redis_url")


@pytest.fixture
def store(store_url):
    return open_store(store_url, ttl=3600)


def new_id():
    return f"resp_{uuid.uuid4().hex}"


def response(response_id, status, **fields):
    return {"id": response_id, "object": "response", "status": status, **fields}


def test_an_unknown_id_is_none(store):
    assert store.get(new_id()) is None


def test_record_then_get(store):
    rid = new_id()
    before = time.time()

    written = store.record(rid, "openai", response(rid, "queued", model="gpt-4o-mini"))

    assert written == store.get(rid)
    assert (written.provider, written.status) == ("openai", "queued")
    assert written.body == response(rid, "queued", model="gpt-4o-mini")
    assert before <= written.created_at == written.updated_at <= time.time()


def test_an_update_keeps_created_at_and_moves_updated_at(store):
    rid = new_id()
    first = store.record(rid, "vllm", response(rid, "in_progress"))
    time.sleep(0.01)

    second = store.record(rid, "vllm", response(rid, "completed", output=[]))

    assert second.status == "completed" and second.body["output"] == []
    assert second.created_at == first.created_at < second.updated_at
    assert store.get(rid) == second


@pytest.mark.parametrize("run", [False, True], ids=["record", "run"])
@pytest.mark.parametrize("stored", STATUSES)
@pytest.mark.parametrize("new", STATUSES)
def test_the_backend_applies_the_no_regression_rule(store, stored, new, run):
    rid = new_id()
    store.record(rid, "openai", response(rid, stored, model="first"), run=run)

    kept = store.record(rid, "openai", response(rid, new, model="second"), run=run)

    replaced = may_replace(stored, new, strict=run)
    assert (kept.status, kept.body["model"]) == ((new, "second") if replaced else (stored, "first"))
    assert store.get(rid) == kept


def test_the_rule_itself():
    assert not may_replace("cancelled", "in_progress")
    assert not may_replace("cancelled", "completed")  # completed-after-cancelled
    assert not may_replace("completed", "in_progress")
    assert not may_replace("in_progress", "queued")
    assert may_replace("queued", "in_progress") and may_replace("in_progress", "cancelled")
    assert may_replace("cancelled", "cancelled")  # the same final status, refreshed
    assert not may_replace("cancelled", "cancelled", strict=True)  # a run's first word stands
    assert may_replace("in_progress", "in_progress", strict=True)  # a run's progress
    assert may_replace("completed", "deleted") and may_replace("queued", "deleted", strict=True)
    assert not may_replace("deleted", "in_progress") and not may_replace("deleted", "deleted")


def test_a_run_is_marked_by_its_heartbeat_which_other_writes_keep(store):
    native, run = new_id(), new_id()
    assert not store.record(native, "openai", response(native, "queued")).gateway_run

    started = store.record(run, "groq", response(run, "queued"), run=True)
    time.sleep(0.01)
    refreshed = store.record(run, "groq", response(run, "in_progress"))  # not the runner's write

    assert started.gateway_run and started.heartbeat_at == started.created_at
    assert refreshed.heartbeat_at == started.heartbeat_at
    assert store.record(run, "groq", response(run, "in_progress"), run=True).heartbeat_at > \
        started.heartbeat_at


def test_heartbeat_stamps_only_runs_still_going(store):
    going, done, native = new_id(), new_id(), new_id()
    for rid, status, run in [(going, "in_progress", True), (done, "completed", True),
                             (native, "in_progress", False)]:
        store.record(rid, "groq", response(rid, status), run=run)
    before = {rid: store.get(rid).heartbeat_at for rid in (going, done, native)}
    time.sleep(0.01)

    store.heartbeat([going, done, native, new_id()])

    assert store.get(going).heartbeat_at > before[going]
    assert store.get(done).heartbeat_at == before[done]
    assert store.get(native).heartbeat_at is None
    store.heartbeat([])  # nothing to stamp is no error


def test_statuses_of_many_ids_at_once(store):
    ids = [new_id() for _ in range(3)]
    for rid, status in zip(ids, ["queued", "cancelled", None]):
        store.record(rid, "groq", response(rid, status), run=True)

    assert store.statuses(ids + [new_id()]) == dict(zip(ids, ["queued", "cancelled", None]))
    assert store.statuses([]) == {}


def test_a_sqlite_file_from_before_runs_and_owners_gains_their_columns(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the table as the previous release made it
        db.execute("CREATE TABLE responses (id TEXT PRIMARY KEY, provider TEXT NOT NULL, "
                   "status TEXT, rank INTEGER NOT NULL, body TEXT NOT NULL, created_at REAL "
                   "NOT NULL, updated_at REAL NOT NULL, expires_at REAL NOT NULL)")
        db.execute("INSERT INTO responses VALUES ('old', 'openai', 'queued', 0, '{}', 1, 1, 9e99)")
    db.close()

    store = open_store(f"sqlite:///{path}", ttl=60)

    assert store.get("old").provider == "openai" and not store.get("old").gateway_run
    assert store.get("old").owner is None  # anyone's, as before
    assert store.record("new", "groq", response("new", "queued"), run=True).gateway_run
    assert store.record("mine", "groq", response("mine", "queued"), owner="o").owner == "o"


def test_racing_processes_cannot_undo_a_cancel(store, store_url):
    """One process cancels while three keep writing in_progress: once any write has
    answered 'cancelled', no later answer (nor the final state) is anything else."""
    rid = new_id()
    store.record(rid, "openai", response(rid, "queued"))
    writers = [("in_progress",)] * 3 + [("in_progress", "cancelled")]
    answers = in_processes(record_statuses,
                           [(store_url, rid, statuses, 100) for statuses in writers])

    assert store.get(rid).status == "cancelled"
    for seen in answers:
        if "cancelled" in seen:
            assert set(seen[seen.index("cancelled"):]) == {"cancelled"}, seen


def test_entries_expire_after_the_ttl(store_url):
    store = open_store(store_url, ttl=1)
    rid = new_id()
    first = store.record(rid, "openai", response(rid, "cancelled"), owner="owner-a")
    time.sleep(1.2)

    assert store.get(rid) is None
    again = store.record(rid, "openai", response(rid, "in_progress"),  # a new entry
                         owner="owner-b")
    assert again.status == "in_progress" and again.created_at > first.created_at
    assert again.owner == "owner-b"  # the expired entry's owner went with it


@pytest.mark.parametrize("run", [False, True], ids=["record", "run"])
def test_the_first_write_names_the_owner_and_no_later_write_changes_it(store, run):
    rid, unowned = new_id(), new_id()

    first = store.record(rid, "openai", response(rid, "queued"), run=run, owner="owner-a")
    later = store.record(rid, "openai", response(rid, "in_progress"), run=run, owner="owner-b")
    ended = store.record(rid, "openai", response(rid, "cancelled"), run=run)  # none given
    refused = store.record(rid, "openai", response(rid, "completed"), owner="owner-b")

    assert first.owner == later.owner == ended.owner == refused.owner == "owner-a"
    assert store.get(rid).owner == "owner-a"
    assert store.record(unowned, "groq", response(unowned, "queued")).owner is None
    assert store.record(unowned, "groq", response(unowned, "in_progress"),
                        owner="owner-b").owner is None  # made by nobody: stays so


@pytest.mark.parametrize("scheme", ["redis://:sekret-pw@127.0.0.1:{port}/0",
                                    "postgresql://gateway:sekret-pw@127.0.0.1:{port}/gateway"])
def test_an_unreachable_store_raises_store_error_without_its_password(scheme):
    store = open_store(scheme.format(port=free_port()), ttl=60)

    for operation in (lambda: store.get("r"), lambda: store.record("r", "openai", {}),
                      lambda: store.statuses(["r"]), lambda: store.heartbeat(["r"])):
        with pytest.raises(StoreError) as info:
            operation()
        assert "sekret-pw" not in str(info.value)
    assert "sekret-pw" not in str(store)


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://", "mysql://db/x",
                                 "postgresql://u@127.0.0.1:5432", "gateway"])
def test_urls_the_store_cannot_use(url):
    with pytest.raises(ValueError):
        open_store(url, ttl=60)


def test_a_sqlite_path_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    store = open_store("sqlite:///here.sqlite3", ttl=60)
    store.record("r", "openai", response("r", "queued"))

    assert (tmp_path / "here.sqlite3").exists()
    assert str(tmp_path / "here.sqlite3") in str(store)


def test_a_sqlite_too_old_for_the_store_is_refused_with_the_version_it_needs(tmp_path,
                                                                             monkeypatch):
    import sqlite3

    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 31, 1))

    with pytest.raises(StoreError, match="needs SQLite 3.35"):
        open_store(f"sqlite:///{tmp_path}/old.sqlite3", ttl=60)


def test_threads_writing_at_once_each_get_their_own_row_and_no_cancel_is_undone(store):
    """32 threads of one process write together (on SQLite, grouped into shared
    transactions): every write answers its own id, and once a write has answered
    'cancelled' for the shared id, no later answer is anything else."""
    import threading

    shared = new_id()
    store.record(shared, "openai", response(shared, "queued"))
    answers, problems = {}, []

    def writer(n):
        seen = []
        for i in range(40):
            own = f"{shared}-{n}-{i}"
            if store.record(own, "groq", response(own, "in_progress")).body["id"] != own:
                problems.append(own)
            status = "cancelled" if (n, i) == (7, 20) else "in_progress"
            seen.append(store.record(shared, "openai", response(shared, status)).status)
        answers[n] = seen

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert problems == [] and len(answers) == 32
    assert store.get(shared).status == "cancelled"
    for seen in answers.values():
        if "cancelled" in seen:
            assert set(seen[seen.index("cancelled"):]) == {"cancelled"}


def test_a_creates_input_is_kept_once_and_a_delete_drops_it(store):
    rid, other = new_id(), new_id()
    items = [{"id": "msg_1", "type": "message", "role": "user",
              "content": [{"type": "input_text", "text": "hi"}]}]
    store.record(rid, "groq", response(rid, "completed"))

    store.keep_input(rid, items, previous="resp_before")
    store.keep_input(rid, [{"id": "msg_2"}])  # the first call counts

    assert store.input_items(rid) == (items, "resp_before", None)
    assert store.input_items(other) is None
    store.keep_input(other, items)
    assert store.input_items(other).previous is None
    store.record(rid, "groq", response(rid, "in_progress"))  # refused: nothing dropped
    assert store.input_items(rid).items == items
    store.append_events([(rid, 0, [{"type": "response.created", "sequence_number": 0}])])
    store.record(rid, "groq", {"id": rid, "status": "deleted"})
    assert store.input_items(rid) is None and store.events(rid, -1) == []
    store.append_events([(rid, 1, [{"type": "response.completed", "sequence_number": 1}])])
    assert store.events(rid, -1) == []  # a run's late events do not bring it back


def test_kept_input_expires_with_the_ttl(store_url):
    store = open_store(store_url, ttl=1)
    rid = new_id()
    store.keep_input(rid, [{"id": "msg_1"}])
    time.sleep(1.2)

    assert store.input_items(rid) is None


def test_a_runs_events_are_logged_in_order_and_read_after_any_number(store):
    rid = new_id()
    events = [{"type": "response.created", "sequence_number": 0},
              {"type": "response.output_text.delta", "sequence_number": 1, "delta": "a"},
              {"type": "response.output_text.delta", "sequence_number": 2, "delta": "b"}]

    other = new_id()
    store.append_events([(rid, 0, events[:2]), (other, 0, events[:1])])
    store.append_events([(rid, 2, events[2:])])
    store.append_events([(rid, 2, events[2:])])  # the same batch again changes nothing
    store.append_events([(rid, 3, [])])

    assert store.events(rid, -1) == events and store.events(other, -1) == events[:1]
    assert store.events(rid, 0) == events[1:] and store.events(rid, 2) == []
    assert store.events(new_id(), -1) == []


def test_sqlite_logging_events_writes_only_what_is_new(tmp_path):
    """A round's write for a run touches its new events and one row for the run, however
    many it logged before (it used to rewrite every event's expiry)."""
    store = open_store(f"sqlite:///{tmp_path}/log.sqlite3", ttl=3600)
    rid = new_id()
    store.append_events([(rid, 0, [{"sequence_number": i} for i in range(2000)])])

    with store._connection() as db:  # the one idle connection, which every call here takes
        before = db.total_changes
    store.append_events([(rid, 2000, [{"sequence_number": 2000}])])
    with store._connection() as again:
        assert again is db
        changed = db.total_changes - before

    assert changed == 2  # the event, and the run's log kept an hour longer
    assert [e["sequence_number"] for e in store.events(rid, 1998)] == [1999, 2000]


def test_sqlite_purge_deletes_what_expired_by_index_and_keeps_the_rest(tmp_path, monkeypatch):
    import sqlite3

    import store.sqlite_backend as backend

    monkeypatch.setattr(backend, "PURGE_BATCH", 7)  # several batches per table
    monkeypatch.setattr(backend, "EVENTS_KEEP", 1)
    store = open_store(f"sqlite:///{tmp_path}/purge.sqlite3", ttl=1)
    old = [new_id() for _ in range(20)]
    for rid in old:
        store.record(rid, "groq", response(rid, "completed"))
        store.keep_input(rid, [{"id": "msg_1"}])
        store.append_events([(rid, 0, [{"sequence_number": 0}, {"sequence_number": 1}])])
    time.sleep(1.1)
    monkeypatch.setattr(store, "ttl", 3600)
    monkeypatch.setattr(backend, "EVENTS_KEEP", 3600)
    kept = new_id()
    store.record(kept, "groq", response(kept, "completed"))
    store.keep_input(kept, [{"id": "msg_1"}])
    store.append_events([(kept, 0, [{"sequence_number": 0}])])

    store._purge()

    with sqlite3.connect(tmp_path / "purge.sqlite3") as db:
        for table in ("responses", "inputs", "event_logs"):
            assert db.execute(f"SELECT id FROM {table}").fetchall() == [(kept,)], table
        assert db.execute("SELECT id, seq FROM events").fetchall() == [(kept, 0)]
        for statement in backend.PURGE:  # each finds its rows by an index, never a scan
            plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}",
                                                 {"now": 0, "batch": 1})]
            assert not [step for step in plan if step.startswith("SCAN")], (statement, plan)
    db.close()


def test_a_sqlite_file_of_version_1_is_upgraded_in_place_with_its_events(tmp_path):
    import sqlite3

    path = tmp_path / "v1.sqlite3"
    with sqlite3.connect(path) as db:  # as the release before event_logs left a file
        db.executescript("""
            CREATE TABLE responses (id TEXT PRIMARY KEY, provider TEXT NOT NULL, status TEXT,
                rank INTEGER NOT NULL, body TEXT NOT NULL, created_at REAL NOT NULL,
                updated_at REAL NOT NULL, expires_at REAL NOT NULL, heartbeat_at REAL,
                owner TEXT);
            CREATE TABLE events (id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL,
                expires_at REAL NOT NULL, PRIMARY KEY (id, seq));
            CREATE TABLE inputs (id TEXT PRIMARY KEY, items TEXT NOT NULL, previous TEXT,
                expires_at REAL NOT NULL);
        """)
        db.execute("INSERT INTO responses VALUES ('run', 'groq', 'in_progress', 1, '{}', 1, 1, "
                   "9e99, 1, 'o')")
        db.executemany("INSERT INTO events VALUES ('run', ?, ?, 9e99)",
                       [(i, f'{{"sequence_number": {i}}}') for i in range(3)])
    db.close()

    store = open_store(f"sqlite:///{path}", ttl=60)
    store.append_events([("run", 3, [{"sequence_number": 3}])])

    assert [e["sequence_number"] for e in store.events("run", 0)] == [1, 2, 3]
    assert store.get("run").owner == "o"
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    assert open_store(f"sqlite:///{path}", ttl=60).events("run", 2) == [{"sequence_number": 3}]


@hypothesis.settings(max_examples=40, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(steps=st.lists(st.tuples(st.sampled_from(STATUSES), st.booleans(),
                                           st.sampled_from([None, "owner-a", "owner-b"])),
                                 min_size=2, max_size=8))
def test_a_history_of_writes_keeps_the_rule_at_every_step(store, steps):
    """Many writes to one id, each from the runner or not and by one owner or another:
    at every step the stored status, body and owner are what the rule says, whichever
    the backend (the table above checks one write after one other)."""
    rid = new_id()
    status = body = owner = None
    for n, (new, run, writer) in enumerate(steps):
        if n == 0 or may_replace(status, new, strict=run):
            status, body = new, response(rid, new, step=n)
        owner = writer if n == 0 else owner  # only the first write names it

        kept = store.record(rid, "openai", response(rid, new, step=n), run=run, owner=writer)

        assert (kept.status, kept.body, kept.owner) == (status, body, owner), (n, steps)
        assert store.get(rid) == kept


# The queue (store.queue): work due at a time, claimed by one process at once.

def new_kind():
    return f"kind-{uuid.uuid4().hex[:8]}"


def test_the_queue_hands_out_what_is_due_in_order_and_holds_it_for_its_lease(store):
    kind, now = new_kind(), time.time()
    assert store.queue.add(kind, "later", {"n": 2}, now + 60, keep=600)
    assert store.queue.add(kind, "second", {"n": 1}, now - 1, keep=600)
    assert store.queue.add(kind, "first", {"n": 0}, now - 2, keep=600)

    claimed = store.queue.claim(kind, now, limit=10, lease=30)

    assert [(d.key, d.payload, d.attempts) for d in claimed] == [
        ("first", {"n": 0}, 0), ("second", {"n": 1}, 0)]
    assert abs(claimed[0].created_at - now) < 5
    assert store.queue.claim(kind, now, limit=10, lease=30) == []  # held by the first claim
    assert sorted(d.key for d in store.queue.claim(kind, now + 31, 10, 30)) == ["first", "second"]
    assert store.queue.depth(kind) == 3


def test_a_key_is_queued_once_done_or_not(store):
    kind, now = new_kind(), time.time()
    assert store.queue.add(kind, "k", {"v": 1}, now, keep=600) is True
    assert store.queue.add(kind, "k", {"v": 2}, now, keep=600) is False

    store.queue.done(kind, "k")

    assert store.queue.add(kind, "k", {"v": 3}, now, keep=600) is False
    assert store.queue.claim(kind, now + 3600, 10, 30) == []
    assert store.queue.depth(kind) == 0


def test_a_retry_counts_the_attempt_and_sets_when_it_is_due_again(store):
    kind, now = new_kind(), time.time()
    store.queue.add(kind, "k", {}, now, keep=600)
    store.queue.claim(kind, now, 10, 30)

    store.queue.retry(kind, "k", now + 5)

    assert store.queue.claim(kind, now + 4, 10, 30) == []
    [due] = store.queue.claim(kind, now + 5, 10, 30)
    assert (due.key, due.attempts) == ("k", 1)


def test_claims_at_once_never_hand_out_one_item_twice(store):
    kind, now = new_kind(), time.time()
    for i in range(200):
        store.queue.add(kind, f"k{i}", {}, now - 1, keep=600)
    claimed = []

    def claimer():
        while batch := store.queue.claim(kind, time.time(), 7, 600):
            claimed.extend(d.key for d in batch)

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(claimed) == sorted(f"k{i}" for i in range(200))
