"""Bad input through gunicorn as the Procfile starts it, with one worker, so whatever a
request does to its worker, the health checks beside it feel: a body that never finishes
arriving, a chunked body past the limit, and the largest body in its worst shapes."""

import json
import socket
import threading
import time

import pytest
import requests

from gateway_process import run_gateway

KEY = "gw-bad-input-key-0001"
LIMIT = 16 * 1024 * 1024  # MAX_CONTENT_LENGTH's default
HEAD = ("POST /v1/responses HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer " + KEY +
        "\r\nContent-Type: application/json\r\n")


def env(provider, **extra):
    return dict(GATEWAY_API_KEYS=KEY, OPENAI_API_KEY="sk-bad-input", WEB_CONCURRENCY="1",
                OPENAI_BASE_URL=provider.base_url, BODY_TIMEOUT="2", **extra)


@pytest.fixture(scope="module")
def gateway(provider, tmp_path_factory):
    with run_gateway(tmp_path_factory.mktemp("bad-input"), **env(provider)) as gw:
        yield gw


def connect(gateway):
    host, port = gateway.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def answer(sock):
    """Everything the gateway sends until it closes the connection, and when it closed."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic()


def envelope(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    if b"chunked" in head.lower():
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    return status, json.loads(body)["error"]


class HealthChecks:
    """Ask /healthz every 0.1 s while a test runs; note every answer that did not come
    (within `seconds`) and the most memory the gateway held meanwhile."""

    def __init__(self, gateway, seconds=2.5):
        self.gateway, self.seconds = gateway, seconds
        self.failures, self.answered, self.peak = [], 0, gateway.rss_bytes()
        self.start_rss = self.peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self):
        with requests.Session() as session:
            while not self._stop.is_set():
                try:
                    session.get(f"{self.gateway.url}/healthz", timeout=self.seconds)
                    self.answered += 1
                except requests.RequestException as exc:
                    self.failures.append(type(exc).__name__)
                self.peak = max(self.peak, self.gateway.rss_bytes())
                time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("trickle", [False, True], ids=["stalled", "trickling"])
def test_a_body_that_never_finishes_arriving_is_dropped(gateway, trickle):
    """Stalled, or a byte a second forever: a 408 envelope once BODY_TIMEOUT (2 s) has
    passed, and the connection closed; the worker answers others all along."""
    sock = connect(gateway)
    sock.sendall((HEAD + "Content-Length: 1000\r\n\r\n").encode() + b'{"model": ')
    started = time.monotonic()
    with HealthChecks(gateway) as checks:
        if trickle:
            for _ in range(3):
                time.sleep(0.9)
                sock.sendall(b" ")
        raw, closed = answer(sock)

    status, error = envelope(raw)
    assert (status, error["type"]) == (408, "invalid_request_error")
    assert 2 <= closed - started < 10  # the bound held: dropped, not held for as long as it liked
    assert checks.failures == [] and checks.answered > 5


def test_a_chunked_body_past_the_limit_is_a_413_and_never_forwarded(provider, tmp_path):
    """Its first 100 bytes are a whole JSON object: cut there, it would have been taken
    for the request and sent to the provider."""
    first = '{"model": "openai/m", "input": "'
    first += "x" * (98 - len(first)) + '"}'
    assert len(first) == 100 and json.loads(first)
    received = len(provider.received)
    with run_gateway(tmp_path, **env(provider, MAX_CONTENT_LENGTH="100")) as gateway:
        sock = connect(gateway)
        chunks = [first.encode(), b" " * 50]  # the whole body is JSON too, 150 bytes
        sock.sendall((HEAD + "Transfer-Encoding: chunked\r\n\r\n").encode() + b"".join(
            f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n")

        raw, _ = answer(sock)

    status, error = envelope(raw)
    assert (status, error["type"]) == (413, "invalid_request_error")
    assert "100 bytes" in error["message"]
    assert len(provider.received) == received


def shapes():
    """The largest body the gateway takes (16 MiB), in shapes that cost a parser most."""
    def fill(prefix, unit, suffix):
        count = (LIMIT - len(prefix) - len(suffix)) // len(unit)
        return prefix + unit * count + suffix
    return {
        "five-million-empty-objects": fill(b'{"model": "openai/m", "input": [', b"{},", b"{}]}"),
        "eight-million-numbers": fill(b'{"model": "openai/m", "metadata": [', b"1,", b"1]}"),
        "nested-eight-million-deep": fill(b'{"model": "openai/m", "input": ', b"[", b""),
        "four-million-strings-of-brackets": fill(b'{"model": "openai/m", "metadata": [',
                                                 b'"{",', b'"{"]}'),
        "one-string-of-code": fill(b'{"model": "openai/m", "input": "', b'f(x){[a,\\"]}', b'"}'),
        # The costliest body within MAX_BODY_VALUES: floats take longest to parse and encode.
        "the-most-floats-allowed": b'{"model": "openai/m", "metadata": [' + b",".join(
            [b"1.2345678901234567e300"] * 99_990) + b"]}",
    }


@pytest.mark.burst
@pytest.mark.parametrize("shape", shapes())
def test_the_largest_body_in_any_shape_is_answered_while_the_worker_serves_others(gateway,
                                                                                 shape):
    """An envelope (or the provider's answer) within seconds; every health check beside it
    answered; the worker's memory grows by well under 1 GB."""
    data = shapes()[shape]
    assert len(data) <= LIMIT
    with HealthChecks(gateway) as checks:
        time.sleep(0.3)
        resp = requests.post(f"{gateway.url}/v1/responses", data=data, timeout=15, headers={
            "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        time.sleep(0.3)

    if shape in ("one-string-of-code", "the-most-floats-allowed"):  # the provider's to judge
        assert resp.status_code == 200 and resp.json()["object"] == "response"
    else:
        assert resp.status_code == 400
        assert resp.json()["error"]["type"] == "invalid_request_error"
    assert checks.failures == [] and checks.answered >= 3
    assert checks.peak - checks.start_rss < 512 * 1024 * 1024


@pytest.mark.burst
def test_a_burst_of_the_largest_bodies_is_held_a_few_at_a_time(provider, tmp_path):
    """Eight 16 MiB bodies of Chinese text at once (each 90 MB of its worker's memory while
    it is parsed and encoded again), at a worker that holds one at a time: each answered
    (the provider's answer, or a 503 envelope to retry), the health checks beside them
    answered, and the memory that of one body, not eight (unbounded: 390 MB)."""
    text = "汉字".encode()
    data = b'{"model": "openai/m", "input": "' + text * (LIMIT // len(text) - 20) + b'"}'
    answers = []

    def send(url):
        resp = requests.post(f"{url}/v1/responses", data=data, timeout=60, headers={
            "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        answers.append((resp.status_code, resp.json()))

    one_at_a_time = {**env(provider, BODIES_IN_FLIGHT=str(LIMIT + 1024)), "BODY_TIMEOUT": "20"}
    with run_gateway(tmp_path, **one_at_a_time) as gw, HealthChecks(gw) as checks:
        senders = [threading.Thread(target=send, args=(gw.url,)) for _ in range(8)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()

    assert len(answers) == 8
    for status, body in answers:
        assert status == 200 or (status, body["error"]["code"]) == (503, "gateway_busy")
    assert sum(status == 200 for status, _ in answers) >= 2
    assert checks.failures == [] and checks.answered >= 3
    assert checks.peak - checks.start_rss < 250 * 1024 * 1024
