"""Background responses the gateway runs, through real gunicorn (2 workers, as the Procfile
starts it) and the official SDK, against a provider on 127.0.0.1 that streams slowly and
records whether its client went away."""

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests

from gateway_process import run_gateway

GATEWAY_KEY = "gw-background-key-0001"


def env(streamer, **extra):
    return {**dict(GATEWAY_API_KEYS=GATEWAY_KEY, WEB_CONCURRENCY="2",
                   ANTHROPIC_API_KEY="sk-ant-e2e", ANTHROPIC_BASE_URL=streamer.base_url,
                   GROQ_API_KEY="gsk-e2e", GROQ_BASE_URL=streamer.base_url), **extra}


@pytest.fixture(scope="module")
def gateway(streamer, tmp_path_factory):
    with run_gateway(tmp_path_factory.mktemp("bg"), **env(streamer)) as gw:
        yield gw


def sdk(gateway):
    """A fresh SDK client: a new connection, so either worker may answer."""
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)


def poll(gateway, response_id, condition, seconds=15):
    """Retrieve the response until `condition` holds; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        response = sdk(gateway).responses.retrieve(response_id)
        if condition(response):
            return response
        assert time.monotonic() < deadline, f"{response_id} stayed {response.status}"
        time.sleep(0.05)


def running(response):
    return response.status == "in_progress" and response.output_text


@pytest.mark.parametrize("provider", ["anthropic", "groq"])
def test_a_background_create_completes_with_the_full_text_and_usage(gateway, streamer, provider):
    created = sdk(gateway).responses.create(model=f"{provider}/words-100-20",
                                            input=f"e2e-{provider}", background=True)
    assert created.status == "queued"

    partial = poll(gateway, created.id, running)
    done = poll(gateway, created.id, lambda r: r.status == "completed")

    assert 0 < len(partial.output_text) < len(done.output_text)  # seen while it ran
    assert done.output_text == " ".join(f"w{i}" for i in range(100))
    assert (done.usage.output_tokens, done.usage.total_tokens) == (100, 102)
    assert len(streamer.streams_for(f"e2e-{provider}")) == 1


def test_cancel_mid_stream_closes_the_upstream_and_never_goes_back(gateway, streamer):
    created = sdk(gateway).responses.create(model="anthropic/words-1000-20", input="e2e-cancel",
                                            background=True)
    poll(gateway, created.id, running)

    cancelled = sdk(gateway).responses.cancel(created.id)
    cancelled_at = time.monotonic()

    assert cancelled.status == "cancelled" and cancelled.output_text
    stream = streamer.wait_for("e2e-cancel", lambda s: s.client_left, seconds=2)
    assert stream.gone_at - cancelled_at < 1 and not stream.finished
    for _ in range(10):  # whichever worker answers, and however late the run's last write
        assert sdk(gateway).responses.retrieve(created.id).status == "cancelled"
        time.sleep(0.05)
    assert sdk(gateway).responses.cancel(created.id).model_dump() == cancelled.model_dump()


def test_the_sdk_deletes_a_running_run_which_stops_at_the_provider(gateway, streamer):
    created = sdk(gateway).responses.create(model="anthropic/words-1000-20", input="e2e-delete",
                                            background=True)
    poll(gateway, created.id, running)

    asked_at = time.monotonic()
    assert sdk(gateway).responses.delete(created.id) is None

    stream = streamer.wait_for("e2e-delete", lambda s: s.client_left, seconds=2)
    assert stream.gone_at - asked_at < 1 and not stream.finished
    time.sleep(0.3)  # whichever worker runs it, its last writes do not bring it back
    for call in (sdk(gateway).responses.retrieve, sdk(gateway).responses.cancel,
                 sdk(gateway).responses.delete):
        with pytest.raises(openai.NotFoundError):
            call(created.id)


def test_the_sdk_lists_a_runs_input_items(gateway):
    created = sdk(gateway).responses.create(model="groq/words-2-0", background=True, input=[
        {"role": "user", "content": "e2e-items"},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "Go on."}])

    newest_first = sdk(gateway).responses.input_items.list(created.id)
    oldest_first = sdk(gateway).responses.input_items.list(created.id, order="asc", limit=2)

    assert [i.content[0].text for i in newest_first.data] == ["Go on.", "Sure.", "e2e-items"]
    assert [i.content[0].text for i in oldest_first.data] == ["e2e-items", "Sure."]
    assert oldest_first.has_more and all(i.id.startswith("msg_") for i in newest_first.data)


def test_the_sdk_continues_a_conversation_at_a_chat_only_provider(gateway, streamer):
    first = sdk(gateway).responses.create(model="anthropic/words-3-0", input="e2e-turn-1",
                                          background=True)
    poll(gateway, first.id, lambda r: r.status == "completed")

    second = sdk(gateway).responses.create(model="anthropic/words-2-0", input="e2e-turn-2",
                                           previous_response_id=first.id, background=True)
    poll(gateway, second.id, lambda r: r.status == "completed")
    sdk(gateway).responses.create(model="anthropic/words-2-0", input="e2e-turn-3",
                                  previous_response_id=second.id, background=True)

    stream = streamer.wait_for("e2e-turn-3", lambda s: s.finished)
    assert stream.body["messages"] == [
        {"role": "user", "content": "e2e-turn-1"}, {"role": "assistant", "content": "w0 w1 w2"},
        {"role": "user", "content": "e2e-turn-2"}, {"role": "assistant", "content": "w0 w1"},
        {"role": "user", "content": "e2e-turn-3"}]
    with pytest.raises(openai.BadRequestError) as info:
        sdk(gateway).responses.create(model="anthropic/words-2-0", input="x",
                                      previous_response_id="resp_nowhere")
    assert info.value.code == "previous_response_not_found"


def test_the_sdk_resumes_a_runs_stream_with_the_same_numbers_on_every_read(gateway):
    created = sdk(gateway).responses.create(model="anthropic/words-40-20", input="e2e-resume",
                                            background=True)
    poll(gateway, created.id, running)

    live = list(sdk(gateway).responses.retrieve(created.id, stream=True, starting_after=2))
    again = list(sdk(gateway).responses.retrieve(created.id, stream=True))  # after its end

    assert live[0].sequence_number == 3 and live[-1].type == "response.completed"
    assert [e.model_dump() for e in again[3:]] == [e.model_dump() for e in live]
    assert [e.sequence_number for e in again] == list(range(len(again)))
    text = "".join(e.delta for e in again if e.type == "response.output_text.delta")
    assert text == " ".join(f"w{i}" for i in range(40))


def test_cancel_of_a_completed_response_is_400(gateway):
    created = sdk(gateway).responses.create(model="groq/words-2-0", input="e2e-done",
                                            background=True)
    poll(gateway, created.id, lambda r: r.status == "completed")

    with pytest.raises(openai.BadRequestError) as info:
        sdk(gateway).responses.cancel(created.id)

    assert info.value.body["message"] == "Cannot cancel a completed response."
    assert sdk(gateway).responses.retrieve(created.id).status == "completed"


@pytest.mark.parametrize("shared_store", ["redis_url", "database_url"],
                         ids=["redis", "postgresql"])
def test_create_on_one_instance_cancel_on_another_sharing_a_store(streamer, request,
                                                                  shared_store,
                                                                  tmp_path_factory):
    shared = env(streamer, STORE_URL=request.getfixturevalue(shared_store),
                 GATEWAY_SECRET="both-hosts-share-this-secret-0001")
    key = f"e2e-shared-{shared_store}"
    with run_gateway(tmp_path_factory.mktemp("a"), **shared) as first, \
            run_gateway(tmp_path_factory.mktemp("b"), **shared) as second:
        created = sdk(first).responses.create(model="groq/words-1000-20", input=key,
                                              background=True)
        poll(second, created.id, running)

        cancelled = sdk(second).responses.cancel(created.id)

        assert cancelled.status == "cancelled"
        # The first instance runs it: its watch saw the cancel and shut the stream.
        stream = streamer.wait_for(key, lambda s: s.client_left, seconds=2)
        assert not stream.finished
        assert sdk(first).responses.retrieve(created.id).status == "cancelled"


def worker_pids(gateway):
    children = Path(f"/proc/{gateway.proc.pid}/task/{gateway.proc.pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def test_a_run_whose_workers_are_killed_is_failed_once_the_lease_passes(streamer,
                                                                      tmp_path_factory):
    with run_gateway(tmp_path_factory.mktemp("kill"),
                     **env(streamer, BACKGROUND_LEASE="2")) as gateway:
        created = sdk(gateway).responses.create(model="anthropic/words-1000-20",
                                                input="e2e-kill", background=True)
        poll(gateway, created.id, running)

        for pid in worker_pids(gateway):
            os.kill(pid, signal.SIGKILL)  # as the OOM killer would
        streamer.wait_for("e2e-kill", lambda s: s.client_left, seconds=2)
        time.sleep(2.5)  # gunicorn starts new workers meanwhile

        lost = poll(gateway, created.id, lambda r: r.status != "in_progress", seconds=5)

    assert lost.status == "failed"
    assert lost.error.code == "run_lost" and "lost" in lost.error.message
    assert lost.output_text  # the output it had is kept


@pytest.mark.burst
def test_200_background_runs_with_50_cancelled_mid_stream(gateway, streamer):
    """Every upstream stream starts exactly once; every cancelled one is closed; none is
    lost, none doubled."""
    keys = [f"load-{i}" for i in range(200)]
    cancelled_keys = set(keys[::4])  # 50, spread through the batch

    def create(key):
        model = "words-1000-10" if key in cancelled_keys else "words-10-10"
        return key, sdk(gateway).responses.create(model=f"groq/{model}", input=key,
                                                  background=True).id

    def cancel(key_and_id):
        key, response_id = key_and_id
        poll(gateway, response_id, running, seconds=60)  # mid-stream, even after waiting queued
        return sdk(gateway).responses.cancel(response_id).status

    with ThreadPoolExecutor(16) as pool:
        ids = dict(pool.map(create, keys))
        statuses = list(pool.map(cancel, [(k, ids[k]) for k in cancelled_keys]))

    assert statuses == ["cancelled"] * 50
    for key in keys:
        if key not in cancelled_keys:
            done = poll(gateway, ids[key], lambda r: r.status == "completed", seconds=60)
            assert done.output_text == " ".join(f"w{i}" for i in range(10)), key
    for key in cancelled_keys:
        stream = streamer.wait_for(key, lambda s: s.client_left, seconds=2)
        assert not stream.finished
        assert sdk(gateway).responses.retrieve(ids[key]).status == "cancelled"
    for key in keys:
        assert len(streamer.streams_for(key)) == 1, key
    assert len(set(ids.values())) == 200
    metrics = requests.get(f"{gateway.url}/metrics", timeout=5).text
    assert 'gateway_background_runs_total{provider="groq",status="cancelled"}' in metrics


def test_on_sigterm_a_running_job_finishes_and_a_queued_one_never_starts(streamer,
                                                                      tmp_path_factory):
    folder = tmp_path_factory.mktemp("term")
    with run_gateway(folder, **env(streamer, WEB_CONCURRENCY="1",
                                   BACKGROUND_THREADS="1")) as gateway:
        running_one = sdk(gateway).responses.create(model="groq/words-60-25", input="e2e-term-1",
                                                    background=True)
        queued_one = sdk(gateway).responses.create(model="groq/words-5-0", input="e2e-term-2",
                                                   background=True)
        poll(gateway, running_one.id, running)

        gateway.proc.send_signal(signal.SIGTERM)  # a deploy: gunicorn stops gracefully
        gateway.proc.wait(timeout=30)

    from store import open_store

    store = open_store(f"sqlite:///{folder}/gateway.sqlite3", ttl=60)
    assert store.get(running_one.id).status == "completed"  # given the graceful timeout
    assert streamer.wait_for("e2e-term-1", lambda s: s.finished)
    stopped = store.get(queued_one.id)
    assert (stopped.status, stopped.body["error"]["code"]) == ("failed", "run_lost")
    assert streamer.streams_for("e2e-term-2") == []  # never started


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_deploy_lets_runs_of_several_seconds_finish_without_a_hang_up(streamer,
                                                                       tmp_path_factory,
                                                                       workers):
    """SIGTERM a second into runs of 6 to 10 s, on every worker: each finishes, completed,
    the provider streams every delta, nobody hangs up, and a client following one gets
    its end. (Longer than gunicorn's 5-s keep-alive, which holds a worker that long.)"""
    folder = tmp_path_factory.mktemp("deploy")
    keys = [f"e2e-deploy-{workers}-{i}" for i in range(4)]
    with run_gateway(folder, **env(streamer, WEB_CONCURRENCY=workers)) as gateway:
        ids = [sdk(gateway).responses.create(
            model=f"{'groq' if i % 2 else 'anthropic'}/words-{100 + 20 * i}-60", input=key,
            background=True).id for i, key in enumerate(keys)]
        for response_id in ids:
            poll(gateway, response_id, running)
        # The shortest run: gunicorn's wait for open requests must not be what saves the rest.
        following = requests.get(f"{gateway.url}/v1/responses/{ids[0]}?stream=true",
                                 headers={"Authorization": f"Bearer {GATEWAY_KEY}",
                                          "Connection": "close"},
                                 stream=True, timeout=30)
        time.sleep(0.5)
        gateway.proc.send_signal(signal.SIGTERM)
        followed = following.text  # the run goes on, and so does its follower, to the end
        gateway.proc.wait(timeout=60)

    from store import open_store

    store = open_store(f"sqlite:///{folder}/gateway.sqlite3", ttl=60)
    for i, (key, response_id) in enumerate(zip(keys, ids)):
        entry = store.get(response_id)
        assert entry.status == "completed", (key, entry.body.get("error"))
        words = 100 + 20 * i
        assert entry.body["output"][0]["content"][0]["text"].endswith(f"w{words - 1}")
        stream = streamer.wait_for(key, lambda s: s.finished)
        assert not stream.client_left and stream.sent == words
    assert "event: response.completed" in followed


def test_a_run_that_outlives_the_graceful_timeout_is_failed_with_its_output_as_the_worker_goes(
        streamer, tmp_path_factory):
    """Not left to the lease: stored failed, with the output it had, before the worker is
    killed; a shorter run beside it completes."""
    folder = tmp_path_factory.mktemp("outlived")
    with run_gateway(folder, gunicorn_args="--graceful-timeout 5",
                     **env(streamer, WEB_CONCURRENCY="1")) as gateway:
        # Clients that hang up when done: gunicorn waits up to `keepalive` (5 s) for an
        # idle kept-alive connection, which here is the whole graceful timeout.
        with sdk(gateway) as client:
            long = client.responses.create(model="anthropic/words-1000-20",
                                           input="e2e-outlived", background=True)
            short = client.responses.create(model="groq/words-60-25",
                                            input="e2e-outlived-short", background=True)
        deadline = time.monotonic() + 10
        while not streamer.streams_for("e2e-outlived") or \
                streamer.streams_for("e2e-outlived")[0].sent < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        gateway.proc.send_signal(signal.SIGTERM)
        gateway.proc.wait(timeout=30)
        log = gateway.log.read_text()

    from store import open_store

    store = open_store(f"sqlite:///{folder}/gateway.sqlite3", ttl=60)
    lost = store.get(long.id)
    assert (lost.status, lost.body["error"]["code"]) == ("failed", "run_lost")
    assert "graceful timeout" in lost.body["error"]["message"]
    assert lost.body["output"][0]["content"][0]["text"].startswith("w0 w1 w2")  # what it had
    stream = streamer.wait_for("e2e-outlived", lambda s: s.client_left, seconds=2)
    assert not stream.finished
    assert store.get(short.id).status == "completed"
    assert [e["type"] for e in store.events(long.id, -1)][-1] == "response.failed"
    assert "1 stopped at the graceful timeout" in log
    assert "SIGKILL" not in log  # it left by itself, its writes done
