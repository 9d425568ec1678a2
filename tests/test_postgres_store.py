"""What only the PostgreSQL store has to show (test_store.py checks its contract with the
others): its schema made and upgraded in place, a database that goes away and comes back,
processes opening one database at once."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from config import ConfigError, Settings
from racers import in_processes, open_and_record
from store import StoreError, open_store, postgres_backend
from store.postgres_backend import MIGRATIONS


def version(url):
    with psycopg.connect(url) as db:
        return db.execute("SELECT version FROM gateway_schema").fetchone()[0]


def test_a_new_database_gets_the_whole_schema_at_start(database_url):
    open_store(database_url, ttl=60)

    assert version(database_url) == len(MIGRATIONS)


def test_a_database_of_the_first_schema_version_is_upgraded_keeping_what_it_holds(
        database_url):
    now = time.time()
    with psycopg.connect(database_url, autocommit=True) as db:  # as the first release left it
        db.execute(MIGRATIONS[0])
        db.execute("CREATE TABLE gateway_schema (version INTEGER NOT NULL)")
        db.execute("INSERT INTO gateway_schema VALUES (1)")
        db.execute("INSERT INTO responses VALUES ('resp_old', 'groq', 'completed', 2, %s, "
                   "%s, %s, %s, NULL, 'owner-a')",
                   (json.dumps({"id": "resp_old", "status": "completed"}), now, now, now + 600))
        db.execute("INSERT INTO inputs VALUES ('resp_old', %s, NULL, %s)",
                   (json.dumps([{"type": "message", "id": "msg_1"}]), now + 600))

    store = open_store(database_url, ttl=60)

    assert version(database_url) == len(MIGRATIONS)
    entry = store.get("resp_old")
    assert (entry.status, entry.owner, entry.body["id"]) == ("completed", "owner-a", "resp_old")
    kept = store.input_items("resp_old")
    assert (kept.items, kept.conversation) == ([{"type": "message", "id": "msg_1"}], None)
    made = store.conversations.create("conv_1", "owner-a", {}, [{"type": "message"}])
    assert made.count == 1  # what the upgrade added works


def test_processes_opening_a_new_database_at_once_upgrade_it_once(database_url):
    failures = in_processes(open_and_record, [(database_url,)] * 4)

    assert failures == [None] * 4
    assert version(database_url) == len(MIGRATIONS)


def test_a_database_that_goes_away_is_a_store_error_and_service_resumes_by_itself(
        postgres, database_url):
    if not hasattr(postgres, "process"):
        pytest.skip("TEST_DATABASE_URL names a server these tests cannot restart")
    store = open_store(database_url, ttl=60)
    store.record("resp_kept", "groq", {"id": "resp_kept", "status": "completed"})

    postgres.stop()
    try:
        started = time.monotonic()
        with pytest.raises(StoreError) as failed:
            store.get("resp_kept")
        assert time.monotonic() - started < 10  # bounded, not a hang
        assert "postgres@" not in str(failed.value)  # no connection string in the message
    finally:
        postgres.start()

    # The pool's broken connections are replaced, not handed out: the first call works.
    assert store.get("resp_kept").status == "completed"
    assert store.record("resp_new", "groq", {"id": "resp_new", "status": "queued"}).status


def sleep(seconds):
    """A store call that holds its connection for `seconds` in the database."""
    return lambda db: db.execute("SELECT pg_sleep(%s)", (seconds,)).fetchone() and seconds


def test_calls_queued_for_a_busy_databases_connections_wait_past_pool_wait(
        database_url, monkeypatch):
    monkeypatch.setattr(postgres_backend, "POOL_WAIT", 0.5)
    store = open_store(database_url, ttl=60, pool_size=1)
    store.get("resp_warm")  # upgraded and connected: a loaded machine may take POOL_WAIT to
    with ThreadPoolExecutor(8) as pool:  # the last waits about 2 s: four times POOL_WAIT
        answers = list(pool.map(lambda _: store.reading(sleep(0.3)), range(8)))

    assert answers == [0.3] * 8  # a database that answers is waited for


def test_calls_waiting_on_a_database_that_answers_nothing_fail_after_pool_wait(
        database_url, monkeypatch):
    monkeypatch.setattr(postgres_backend, "POOL_WAIT", 0.5)
    store = open_store(database_url, ttl=60, pool_size=1)
    store.get("resp_warm")
    with ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(store.reading, sleep(3))
        time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(StoreError, match="no connection free"):
            store.get("resp_waiting")
        waited = time.monotonic() - started
        assert stuck.result() == 3

    assert 0.3 <= waited < 2.5  # POOL_WAIT after the last answer, not the stuck call's end


def test_a_database_down_at_start_is_no_error_until_it_is_used(postgres):
    url = postgres.url.rsplit("/", 1)[0] + "/no_such_database"

    store = open_store(url, ttl=60)  # as a Redis that is down at start

    with pytest.raises(StoreError):
        store.get("resp_x")


@pytest.mark.parametrize("variable", ["STORE_URL", "DATABASE_URL"])
def test_database_url_is_read_when_store_url_is_unset(database_url, variable):
    url = database_url.replace("postgresql://", "postgres://")  # as Heroku spells it
    settings = Settings.from_env({"GATEWAY_API_KEYS": "k", variable: url,
                                  "GATEWAY_SECRET": "s" * 32})

    assert str(settings.store).startswith("PostgreSQL at 127.0.0.1:")


def test_store_url_wins_over_database_url(database_url, tmp_path):
    settings = Settings.from_env({"GATEWAY_API_KEYS": "k", "DATABASE_URL": database_url,
                                  "STORE_URL": f"sqlite:///{tmp_path}/s.sqlite3"})

    assert str(settings.store).startswith("SQLite")


def test_a_url_without_a_database_stops_the_start():
    with pytest.raises(ConfigError, match="must name a database"):
        Settings.from_env({"GATEWAY_API_KEYS": "k", "STORE_URL": "postgresql://u@127.0.0.1"})
