"""Background responses the gateway runs: the runner with a fake clock, then the lifecycle
through the app against a provider on 127.0.0.1 that streams slowly."""

import threading
import time

import pytest

from background import LOST, Runner
from providers.errors import RateLimited
from store import open_store
from support import GATEWAY_KEY, assert_envelope, auth

LEASE = 20.0


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self):
        return self.now


class FakeGeneration:
    """Grows through the given outputs, then waits for release() before its final one."""

    def __init__(self, response_id, so_far=(), final_status="completed", error=None):
        self.response_id, self.outputs = response_id, list(so_far)
        self.final_status, self.error = final_status, error
        self.started, self.released, self.shut = (threading.Event() for _ in range(3))
        self.output = []  # the output so far

    def queued(self):
        return {"id": self.response_id, "model": "m", "status": "queued", "output": []}

    def so_far(self):
        return {**self.queued(), "status": "in_progress", "output": self.output}

    def open(self):
        return self

    def changes(self):
        self.started.set()
        for output in self.outputs:
            self.output = output
            yield [{"type": "response.output_text.delta", "output_index": 0, "delta": "x"}]
        self.released.wait(5)

    def final(self):
        if self.error:
            raise self.error
        return {**self.queued(), "status": self.final_status, "output": self.output}

    @property
    def closed(self):
        return self.shut.is_set()

    def close(self):
        self.shut.set()
        self.released.set()


def message(text):
    return [{"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": text}]}]


@pytest.fixture
def store(tmp_path):
    return open_store(f"sqlite:///{tmp_path}/runs.sqlite3", ttl=3600)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def runner(store, clock):
    """A runner with one thread and no watch thread: the test calls tick() itself."""
    return Runner(store, threads=1, lease=LEASE, clock=clock, watch_every=None)


def wait_until(condition, seconds=5):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_submit_stores_the_run_as_queued_and_runs_it_to_its_end(runner, store):
    gen = FakeGeneration("resp_a", so_far=[message("Hel"), message("Hello")])

    entry = runner.submit("groq", gen)
    assert (entry.status, entry.body["provider"], entry.gateway_run) == ("queued", "groq", True)
    gen.released.set()

    wait_until(lambda: store.get("resp_a").status == "completed")
    assert store.get("resp_a").body["output"] == message("Hello")
    wait_until(lambda: not runner.running())


def test_tick_writes_progress_at_most_every_half_second_of_the_clock(runner, store, clock):
    gen = FakeGeneration("resp_p", so_far=[message("a"), message("ab")])
    runner.submit("groq", gen)
    wait_until(lambda: store.get("resp_p").status == "in_progress")
    wait_until(lambda: runner._jobs["resp_p"].grown == 2)

    clock.now += 0.1
    runner.tick()
    assert store.get("resp_p").body["output"] == []  # written 0.1 s ago: not yet
    clock.now += 0.5
    runner.tick()
    assert store.get("resp_p").body["output"] == message("ab")
    gen.released.set()


def test_tick_stops_a_run_cancelled_elsewhere(runner, store):
    gen = FakeGeneration("resp_c", so_far=[message("x")])
    runner.submit("groq", gen)
    gen.started.wait(5)
    # Another worker or host cancels it through the store.
    body = store.get("resp_c").body
    store.record("resp_c", "groq", {**body, "status": "cancelled"}, run=True)

    runner.tick()

    assert gen.closed
    wait_until(lambda: not runner.running())
    assert store.get("resp_c").status == "cancelled"  # the run's own writes could not undo it


def test_tick_stamps_heartbeats_every_quarter_lease(store, clock):
    runner = Runner(store, threads=0, lease=LEASE, clock=clock, watch_every=None)  # stays queued
    runner.submit("groq", FakeGeneration("resp_h"))
    beats = []

    for step in (0, 1, 4.5):  # the first round stamps; then not before lease / 4 = 5 s
        clock.now += step
        time.sleep(0.01)  # the store stamps with the wall clock
        runner.tick()
        beats.append(store.get("resp_h").heartbeat_at)

    assert beats[0] == beats[1] and beats[2] > beats[1]


def test_settle_fails_a_run_whose_heartbeat_is_past_the_lease(runner, store, clock):
    runner_elsewhere = Runner(store, threads=0, lease=LEASE, watch_every=None)
    entry = runner_elsewhere.submit("anthropic", FakeGeneration("resp_l"))

    clock.now = entry.heartbeat_at + LEASE - 1
    assert runner.settle("resp_l", entry).status == "queued"
    clock.now = entry.heartbeat_at + LEASE + 1
    lost = runner.settle("resp_l", entry)

    assert lost.status == "failed"
    assert lost.body["error"] == {"code": "run_lost", "message": LOST}
    assert store.get("resp_l").status == "failed"


def test_a_run_cancelled_while_queued_never_starts(runner, store):
    first, second = FakeGeneration("resp_1"), FakeGeneration("resp_2")
    runner.submit("groq", first)
    runner.submit("groq", second)  # one thread: it waits
    first.started.wait(5)

    entry = runner.cancel("resp_2", store.get("resp_2"))
    first.released.set()

    assert entry.status == "cancelled"
    wait_until(lambda: not runner.running())
    assert not second.started.is_set()
    assert store.get("resp_2").status == "cancelled"


def test_cancel_of_a_run_here_stops_it_and_keeps_its_output(runner, store):
    gen = FakeGeneration("resp_k", so_far=[message("partial")])
    runner.submit("groq", gen)
    wait_until(lambda: runner._jobs["resp_k"].grown)

    entry = runner.cancel("resp_k", store.get("resp_k"))

    assert gen.closed
    assert (entry.status, entry.body["output"]) == ("cancelled", message("partial"))
    again = runner.cancel("resp_k", store.get("resp_k"))
    assert again.body == entry.body  # a repeat cancel changes nothing


def test_a_provider_failure_mid_run_is_a_failed_response_with_its_error(runner, store):
    gen = FakeGeneration("resp_f", so_far=[message("x")],
                         error=RateLimited("groq", "groq: slow down"))
    runner.submit("groq", gen)
    gen.released.set()

    wait_until(lambda: store.get("resp_f").status == "failed")
    assert store.get("resp_f").body["error"] == {"code": "rate_limit_exceeded",
                                                 "message": "groq: slow down"}


# Through the app, against a provider that streams over real sockets.

@pytest.fixture
def gateway(streaming_client):
    return streaming_client


def create(gateway, provider, model, key):
    resp = gateway.post("/v1/responses", headers=auth(), json={
        "model": f"{provider}/{model}", "input": key, "background": True})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def poll(gateway, response_id, condition, seconds=10):
    """Retrieve the response until `condition` holds; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        body = gateway.get(f"/v1/responses/{response_id}", headers=auth()).get_json()
        if condition(body):
            return body
        assert time.monotonic() < deadline, f"{response_id} stayed {body['status']}"
        time.sleep(0.05)


@pytest.mark.parametrize("provider", ["anthropic", "groq"])
def test_a_background_create_answers_at_once_and_completes(gateway, streamer, provider):
    created = create(gateway, provider, "words-8-20", f"bg-{provider}")

    assert (created["status"], created["provider"], created["output"]) == ("queued", provider, [])
    done = poll(gateway, created["id"], lambda b: b["status"] == "completed")
    assert done["output"][-1]["content"][0]["text"] == " ".join(f"w{i}" for i in range(8))
    assert done["usage"]["output_tokens"] == 8 and done["id"] == created["id"]
    assert len(streamer.streams_for(f"bg-{provider}")) == 1


def test_cancel_mid_stream_closes_the_upstream_and_stays_cancelled(gateway, streamer):
    created = create(gateway, "gemini", "words-500-20", "bg-cancel")
    partial = poll(gateway, created["id"], lambda b: b["output"])
    assert partial["status"] == "in_progress"  # output so far, visible while it runs

    cancelled = gateway.post(f"/v1/responses/{created['id']}/cancel", headers=auth())

    assert cancelled.status_code == 200
    body = cancelled.get_json()
    assert body["status"] == "cancelled" and body["output"][0]["content"][0]["text"]
    stream = streamer.wait_for("bg-cancel", lambda s: s.client_left, seconds=1)
    assert not stream.finished
    time.sleep(0.3)
    for _ in range(3):
        assert gateway.get(f"/v1/responses/{created['id']}", headers=auth()).get_json() == body
    again = gateway.post(f"/v1/responses/{created['id']}/cancel", headers=auth())
    assert (again.status_code, again.get_json()) == (200, body)


@pytest.mark.parametrize("model,status", [("words-2-0", "completed"), ("fail-2-0", "failed"),
                                          ("length-2-0", "incomplete")])
def test_cancel_of_a_finished_run_is_400_and_its_status_stays(gateway, model, status):
    created = create(gateway, "zai", model, f"bg-{model}")
    poll(gateway, created["id"], lambda b: b["status"] != "queued" and b["status"] != "in_progress")

    error = assert_envelope(gateway.post(f"/v1/responses/{created['id']}/cancel",
                                         headers=auth()), 400, "invalid_request_error")

    assert error["message"] == f"Cannot cancel a {status} response."
    assert gateway.get(f"/v1/responses/{created['id']}", headers=auth()).get_json()[
        "status"] == status


def test_a_failed_run_carries_the_provider_error(gateway):
    created = create(gateway, "minimax", "fail-2-0", "bg-fails")

    failed = poll(gateway, created["id"], lambda b: b["status"] == "failed")

    assert failed["error"]["code"] == "upstream_error"
    assert "overloaded" in failed["error"]["message"]
    assert failed["output"][0]["content"][0]["text"] == "w0 w1"  # what it had, kept


def test_an_id_the_gateway_does_not_run_keeps_the_501(gateway):
    assert_envelope(gateway.post("/v1/responses/resp_elsewhere/cancel?provider=anthropic",
                                 headers=auth()), 501, "invalid_request_error",
                    code="unsupported_response_operation")


def test_the_client_key_never_reaches_the_streaming_provider(gateway, streamer):
    created = create(gateway, "opencodego", "words-1-0", "bg-keys")
    poll(gateway, created["id"], lambda b: b["status"] == "completed")

    assert GATEWAY_KEY not in str(streamer.streams_for("bg-keys")[0].body)


def test_tick_never_writes_when_a_run_has_just_ended(runner, store, clock):
    """The run clears its progress as it writes its final Response; a watch round that
    comes between must not store anything in its place."""
    gen = FakeGeneration("resp_e", so_far=[message("x")])
    runner.submit("groq", gen)
    wait_until(lambda: runner._jobs["resp_e"].grown)
    job = runner._jobs["resp_e"]
    job.running = False  # as the run leaves it, just before its final write
    clock.now += 1

    runner.tick()

    assert store.get("resp_e").status == "in_progress"
    gen.released.set()
    wait_until(lambda: store.get("resp_e").status == "completed")


def test_a_stopping_process_fails_its_queued_runs_and_starts_none(store, clock):
    import background

    runner = Runner(store, threads=0, lease=LEASE, clock=clock, watch_every=None)
    gen = FakeGeneration("resp_q")
    runner.submit("groq", gen)
    try:
        background.stop_starting()  # what gunicorn.conf.py's SIGTERM hook calls
        runner.tick()
    finally:
        background.STOPPING.clear()

    stopped = store.get("resp_q")
    assert (stopped.status, stopped.body["error"]["code"]) == ("failed", "run_lost")
    assert not runner.running() and not gen.started.is_set()


def test_runs_submitted_together_run_together_up_to_the_pool_size(store, clock):
    """With a thread already idle, two runs submitted back to back both start, though
    the first never ends by itself."""
    runner = Runner(store, threads=2, lease=LEASE, clock=clock, watch_every=None)
    warm = FakeGeneration("resp_t0")
    warm.released.set()
    runner.submit("groq", warm)
    wait_until(lambda: not runner.running())  # its thread now waits, idle
    first, second = FakeGeneration("resp_t1"), FakeGeneration("resp_t2")

    runner.submit("groq", first)
    runner.submit("groq", second)

    assert first.started.wait(2) and second.started.wait(2)
    first.released.set()
    second.released.set()


def run_threads():
    return [t for t in threading.enumerate() if t.name == "background-run"]


def test_runs_start_up_to_the_pool_size_the_rest_wait_and_an_idle_runner_holds_no_thread(
        store, clock):
    runner = Runner(store, threads=2, lease=LEASE, clock=clock, watch_every=None)
    gens = [FakeGeneration(f"resp_p{i}") for i in range(3)]

    for gen in gens:
        runner.submit("groq", gen)

    assert gens[0].started.wait(2) and gens[1].started.wait(2)
    time.sleep(0.1)
    assert not gens[2].started.is_set() and store.get("resp_p2").status == "queued"
    assert len(run_threads()) == 2
    gens[0].released.set()
    assert gens[2].started.wait(2)  # the freed thread takes the waiting job
    gens[1].released.set()
    gens[2].released.set()
    wait_until(lambda: not runner.running() and not run_threads())
    assert [store.get(g.response_id).status for g in gens] == ["completed"] * 3


def test_a_reader_of_a_run_that_is_deleted_meanwhile_stops(store, clock):
    runner = Runner(store, threads=1, lease=LEASE, clock=clock, watch_every=None)
    gen = FakeGeneration("resp_del", so_far=[message("a")])
    entry = runner.submit("groq", gen)
    assert gen.started.wait(2)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(
        runner.replay("resp_del", -1, threading.Event())))
    reader.start()

    runner.delete("resp_del", entry)

    reader.join(timeout=3)
    assert not reader.is_alive()  # it ends, and does not spin
    assert [e["type"] for e in seen][:3] == ["response.created", "response.queued",
                                             "response.in_progress"]
    assert not any(e["type"].startswith("response.comp") for e in seen)
