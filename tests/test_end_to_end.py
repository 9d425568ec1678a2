"""End to end: gunicorn started as the Procfile says, driven by the official openai SDK,
in front of a fake provider on 127.0.0.1."""

import subprocess
import sys
import uuid

import openai
import pytest
import requests

from fake_upstream import MISSING
from gateway_process import ROOT, clean_env, free_port, procfile_command, run_gateway

GATEWAY_KEY = "gw-e2e-key-0001"
PROVIDER_KEY = "sk-e2e-provider-0001"


@pytest.fixture(scope="module")
def gateway(provider, tmp_path_factory):
    """A real gunicorn with 2 workers on 127.0.0.1, in front of the fake provider."""
    with run_gateway(
        tmp_path_factory.mktemp("gunicorn"),
        GATEWAY_API_KEYS=GATEWAY_KEY,
        OPENAI_API_KEY=PROVIDER_KEY,
        OPENAI_BASE_URL=provider.base_url,
        ANTHROPIC_API_KEY="sk-ant-e2e-0001",
        ANTHROPIC_BASE_URL=provider.base_url,  # never the real one, whatever a test sends
        WEB_CONCURRENCY="2",
    ) as gateway:
        yield gateway


@pytest.fixture
def sdk(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)


def test_gunicorn_runs_two_workers(gateway):
    assert gateway.read_log_until("Booting worker", times=2).count("Booting worker") == 2


def test_sdk_cancels_through_the_gateway(sdk, provider):
    response_id = f"resp_{uuid.uuid4().hex}"

    response = sdk.responses.cancel(response_id, extra_query={"provider": "openai"})

    assert (response.id, response.object, response.status) == (response_id, "response", "cancelled")
    assert response.model == "gpt-4o-mini"
    [(method, path, headers, _)] = [r for r in provider.received if response_id in r.path]
    assert (method, path) == ("POST", f"/v1/responses/{response_id}/cancel")
    assert headers["Authorization"] == f"Bearer {PROVIDER_KEY}"
    assert GATEWAY_KEY not in str(headers)


def test_sdk_cancels_without_a_hint_by_probing(sdk):
    response = sdk.responses.cancel("resp_probe_1")

    assert response.id == "resp_probe_1"


def test_sdk_sees_a_missing_response_as_not_found(sdk):
    with pytest.raises(openai.NotFoundError) as info:
        sdk.responses.cancel(MISSING, extra_query={"provider": "openai"})

    assert info.value.body["type"] == "not_found_error"
    assert MISSING in info.value.body["message"]


def test_sdk_sees_a_bad_key_as_authentication_error(gateway, provider):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="not-the-key", max_retries=0)
    before = len(provider.received)

    with pytest.raises(openai.AuthenticationError):
        client.responses.cancel("resp_1", extra_query={"provider": "openai"})

    assert len(provider.received) == before


def test_sdk_does_not_retry_an_unsupported_provider(gateway):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=2)
    request_id = f"e2e-{uuid.uuid4().hex}"

    with pytest.raises(openai.APIStatusError) as info:
        client.responses.cancel("resp_1", extra_query={"provider": "anthropic"},
                                extra_headers={"X-Request-ID": request_id})

    assert info.value.status_code == 501
    assert info.value.body["code"] == "unsupported_response_operation"
    assert gateway.read_log_until(request_id).count(request_id) == 1  # one request, no retries


def test_access_log_has_status_latency_and_request_id_but_no_secrets(sdk, gateway):
    request_id = f"e2e-{uuid.uuid4().hex}"

    sdk.responses.cancel("resp_logged", extra_query={"provider": "openai"},
                         extra_headers={"X-Request-ID": request_id})

    log = gateway.read_log_until(request_id)
    [line] = [line for line in log.splitlines() if request_id in line]
    assert '"POST /v1/responses/resp_logged/cancel?provider=openai HTTP/1.1" 200 ' in line
    assert line.split()[-2].endswith("ms")
    assert GATEWAY_KEY not in log and PROVIDER_KEY not in log


def test_gunicorn_refuses_to_start_without_gateway_keys():
    port = free_port()
    env = clean_env(OPENAI_API_KEY=PROVIDER_KEY, GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{port}")

    done = subprocess.run(procfile_command(), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)

    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "GATEWAY_API_KEYS" in lines[0]


def test_gunicorn_refuses_a_worker_class_it_does_not_run_with_one_line():
    env = clean_env(GATEWAY_API_KEYS=GATEWAY_KEY, WORKER_CLASS="sync",
                    GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{free_port()}")

    done = subprocess.run(procfile_command(), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)

    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode != 0 and len(lines) == 1 and "WORKER_CLASS" in lines[0]


def test_the_gateway_starts_under_gevent_with_no_warning(gateway):
    log = gateway.read_log_until("Booting worker", times=2)

    assert "Using worker: gevent" in log
    assert "Warning" not in log and "WARNING" not in log  # e.g. a MonkeyPatchWarning


def test_metrics_add_up_across_both_workers(gateway, sdk):
    url = gateway.url
    route = 'route="/v1/responses/<string(minlength=0):response_id>/cancel"'

    def cancels_counted():
        text = requests.get(f"{url}/metrics", timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("gateway_requests_total{") and route in line
                   and 'provider="openai"' in line and 'status="200"' in line)

    before = cancels_counted()
    with requests.Session() as first, requests.Session() as second:  # two connections
        for i in range(10):
            session = first if i % 2 else second
            session.post(f"{url}/v1/responses/resp_m{i}/cancel?provider=openai",
                         headers={"Authorization": f"Bearer {GATEWAY_KEY}"}, timeout=5)

    assert cancels_counted() - before == 10
    assert {cancels_counted() for _ in range(6)} == {before + 10}  # whichever worker answers


def test_a_metrics_folder_shared_with_other_files_loses_only_old_metric_files(provider,
                                                                               tmp_path):
    """An operator who points PROMETHEUS_MULTIPROC_DIR at the data folder keeps the store
    (and anything else in it) across restarts; last run's metric files go."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "counter_4242.db").write_bytes(b"last run's counts")
    env = dict(GATEWAY_API_KEYS=GATEWAY_KEY, OPENAI_API_KEY=PROVIDER_KEY,
               OPENAI_BASE_URL=provider.base_url, PROMETHEUS_MULTIPROC_DIR=str(folder),
               STORE_URL=f"sqlite:///{folder}/gateway.sqlite3")
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}"}
    with run_gateway(tmp_path, **env) as gateway:
        created = requests.post(f"{gateway.url}/v1/responses", headers=headers, timeout=5,
                                json={"model": "openai/m", "background": True}).json()

    with run_gateway(tmp_path, **env) as gateway:  # a restart: the store is still there
        kept = requests.get(f"{gateway.url}/v1/responses/{created['id']}", headers=headers,
                            timeout=5)
        assert requests.get(f"{gateway.url}/metrics", timeout=5).status_code == 200

    assert kept.status_code == 200 and kept.json()["id"] == created["id"]
    names = {p.name for p in folder.iterdir()}
    assert {"notes.txt", "gateway.sqlite3", "gateway.sqlite3.secret"} <= names
    assert "counter_4242.db" not in names


RESOLVER_PROBE = """
import runpy, socket, gevent
runpy.run_path("gunicorn.conf.py")  # as gunicorn reads it: patches, then sets the resolver
resolver = gevent.get_hub().resolver
looked_up, pool = [], resolver.pool

class Counting:  # the native thread pool, noting each host sent to it
    def apply(self, func, args, kwargs=None):
        looked_up.append(args[0])
        return pool.apply(func, args, kwargs)

resolver.pool = Counting()
socket.getaddrinfo("127.0.0.1", 443)  # what urllib3 calls to connect to a provider
socket.getaddrinfo("::1", "443")
assert looked_up == [], looked_up
assert socket.getaddrinfo("localhost", 443)  # a name: the system resolver, on a thread
assert looked_up == ["localhost"], looked_up
print(type(resolver).__name__)
"""


def test_gevent_looks_up_names_on_a_thread_but_reads_an_ip_address_in_place():
    done = subprocess.run([sys.executable, "-c", RESOLVER_PROBE], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, env=clean_env())

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "NumericFirstResolver"


FREEZE_PROBE = """
import gc, os, runpy
conf = runpy.run_path("gunicorn.conf.py")  # as gunicorn reads it
from app import create_app
app = create_app({"GATEWAY_AUTH": "disabled", "STORE_URL": "sqlite:///" + os.environ["DB"]})
conf["pre_fork"](None, None)  # what gunicorn calls in the master before each worker
pid = os.fork()
if pid == 0:  # the worker: a full collection must not visit what the master built
    gc.collect()
    seen = {id(o) for o in gc.get_objects()}
    os._exit(0 if id(app) not in seen and id(app.view_functions) not in seen else 1)
_, status = os.waitpid(pid, 0)
print(gc.get_freeze_count() > 10_000, os.waitstatus_to_exitcode(status))
"""


def test_a_workers_collections_leave_the_preloaded_app_alone(tmp_path):
    done = subprocess.run([sys.executable, "-c", FREEZE_PROBE], cwd=ROOT, text=True,
                          capture_output=True, timeout=60,
                          env=clean_env(DB=str(tmp_path / "probe.sqlite3")))

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "0"]
