"""Processes that write one store at once, as gunicorn workers do, for the store tests.

A module of its own that imports only the store: each process is spawned and imports it."""

import multiprocessing

from store import open_store


def in_processes(target, arguments, timeout=60):
    """What target(*args, start, results) put on `results`, one process per args; each
    calls start.wait() when ready, and all go on together.

    Spawned, not forked: a fork of pytest copies the locks its other threads hold at that
    moment, and a child stuck on one never ends. Daemonic and killed at the end, so no child
    can keep pytest from exiting (multiprocessing joins the others at exit)."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(len(arguments), timeout=timeout), context.Queue()
    procs = [context.Process(target=target, args=(*args, start, results), daemon=True)
             for args in arguments]
    try:
        for proc in procs:
            proc.start()
        return [results.get(timeout=timeout) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()


def record_statuses(url, rid, statuses, rounds, start, results):
    """Write each of `statuses` to `rid`, `rounds` times; put the status each write answered."""
    store = open_store(url, ttl=3600)
    start.wait()
    seen = []
    for _ in range(rounds):
        for status in statuses:
            body = {"id": rid, "object": "response", "status": status}
            seen.append(store.record(rid, "openai", body).status)
    results.put(seen)


def append_turns(url, cid, worker, turns, start, results):
    """Append `turns` turns of five messages named worker-turn-part to `cid`."""
    store = open_store(url, ttl=3600)
    start.wait()
    for n in range(turns):
        store.conversations.append_turn(cid, f"resp_{worker}_{n}", [
            {"type": "message", "role": "user", "status": "completed",
             "content": [{"type": "input_text", "text": f"{worker}-{n}-{part}"}]}
            for part in range(5)])
    results.put(worker)


def open_and_record(url, start, results):
    """Open the store (upgrading a new database) and record one response; put what failed."""
    start.wait()
    try:
        open_store(url, ttl=60).record("resp_p", "groq", {"id": "resp_p", "status": "queued"})
    except Exception as exc:  # noqa: BLE001 (reported to the test)
        results.put(repr(exc))
    else:
        results.put(None)
