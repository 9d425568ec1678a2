"""How provider calls reach the network: proxies and the CA bundle read from the
environment once, at start; no cookie carried from one call to the next."""

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme

import providers.upstream as upstream_module
from config import ConfigError, proxies_for
from fake_upstream import FakeProvider
from support import PROVIDER_KEYS, assert_envelope, auth, cancel_url, upstream_response


class ForwardProxy(ThreadingHTTPServer):
    """An HTTP proxy on 127.0.0.1 that records what it is asked for and answers itself."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append((self.command, self.path, self.headers.get("Authorization")))
        body = json.dumps(upstream_response("r")).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def proxy():
    server = ForwardProxy()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_calls_go_through_the_proxy_the_environment_names(make_client, proxy, variable):
    client = make_client(OPENAI_BASE_URL="http://openai.internal/v1", **{variable: proxy.url})

    resp = client.post("/v1/responses/r/cancel?provider=openai", headers=auth())

    assert resp.status_code == 200
    assert proxy.seen == [("POST", "http://openai.internal/v1/responses/r/cancel",
                           f"Bearer {PROVIDER_KEYS['openai']}")]


def test_the_process_environment_is_not_read_on_each_call(make_client, provider, proxy,
                                                          monkeypatch):
    client = make_client(OPENAI_BASE_URL=provider.base_url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)  # set after start: must change nothing

    assert client.post("/v1/responses/r/cancel?provider=openai", headers=auth()).status_code == 200
    assert proxy.seen == []


@pytest.mark.parametrize("no_proxy,proxied", [
    ("", True), ("api.openai.com", False), (".openai.com", False), ("openai.com", False),
    ("*", False), ("other.com, api.openai.com:443", False), ("penai.com", True),
])
def test_no_proxy_is_matched_as_requests_would(no_proxy, proxied):
    env = {"HTTPS_PROXY": "http://proxy.corp:3128", "NO_PROXY": no_proxy}

    found = proxies_for(env, "https://api.openai.com/v1")

    assert found == ({"https": "http://proxy.corp:3128"} if proxied else {})


@pytest.mark.parametrize("url,no_proxy,proxied", [
    ("http://10.1.2.3:8000/v1", "10.0.0.0/8", False),  # CIDR
    ("http://10.1.2.3:8000/v1", "10.1.2.3", False),
    ("http://10.1.2.3:8000/v1", "10.1.2.3:8000", False),  # an address and its port
    ("http://10.1.2.3:8000/v1", "10.1.2.3:9000", True),  # another port
    ("http://11.1.2.3:8000/v1", "10.0.0.0/8", True),
    ("http://[fd00::1]:8000/v1", "fd00::1", False),  # IPv6 literals
    ("http://[fd00::1]:8000/v1", "[fd00::1]", False),
    ("http://[fd00::1]:8000/v1", "[fd00::1]:8000", False),
    ("http://[fd00::1]:8000/v1", "fd00::/8", False),  # an IPv6 network
    ("http://[fe80::1]:8000/v1", "fd00::/8", True),
    ("http://api.internal:8000/v1", ".internal", False),  # a leading dot
    ("http://api.internal:8000/v1", "INTERNAL", False),
    ("http://api.internal:8000/v1", "api.internal:8000", False),
    ("http://api.internal:8000/v1", "api.internal:9000", True),
    ("http://notinternal:8000/v1", "internal", True),  # a suffix is not a domain
    ("https://api.openai.com/v1", "api.openai.com:443", False),  # the scheme's own port
    ("https://api.openai.com/v1", "api.openai.com:80", True),
    ("http://10.1.2.3:8000/v1", "*", False),
])
def test_no_proxy_means_what_it_means_to_requests_and_curl(url, no_proxy, proxied):
    env = {"HTTP_PROXY": "http://proxy.corp:3128", "HTTPS_PROXY": "http://proxy.corp:3128",
           "NO_PROXY": no_proxy}

    assert bool(proxies_for(env, url)) == proxied


def test_a_provider_in_a_no_proxy_network_is_called_directly(make_client, provider, proxy):
    """Not through the proxy, where a plain-HTTP call would carry the key and the prompt."""
    client = make_client(OPENAI_BASE_URL=provider.base_url, HTTP_PROXY=proxy.url,
                         NO_PROXY="127.0.0.0/8")

    assert client.post("/v1/responses/r/cancel?provider=openai", headers=auth()).status_code == 200
    assert proxy.seen == []


def test_a_create_is_never_sent_on_a_connection_the_provider_is_closing(make_client):
    """The provider closes connections idle 1.5 s: one that gets a request then has hung
    up on it unanswered (a create that cannot be sent again). Creates spaced around that
    all succeed, each sent once: a connection idle past REUSE_IDLE is not used again."""
    with FakeProvider(idle_close=1.5) as fake:
        client = make_client(OPENAI_BASE_URL=fake.base_url)
        answers = []
        for pause in (0, 0.3, 1.2, 1.6, 2.1):
            time.sleep(pause)
            answers.append(client.post("/v1/responses", headers=auth(), json={
                "model": "openai/m", "input": f"spaced {pause}"}).status_code)

    assert answers == [200] * 5 and fake.hung_up == []
    assert [r.body["input"] for r in fake.received] == [
        f"spaced {pause}" for pause in (0, 0.3, 1.2, 1.6, 2.1)]


def test_a_provider_that_hangs_up_on_a_create_is_not_sent_it_again(make_client, monkeypatch):
    """Reused anyway, it fails once, saying what happened: it connected, and was hung up
    on (not 'could not connect')."""
    monkeypatch.setattr(upstream_module, "REUSE_IDLE", 60)
    with FakeProvider(idle_close=0.5) as fake:
        client = make_client(OPENAI_BASE_URL=fake.base_url)
        assert client.post("/v1/responses", headers=auth(), json={"model": "openai/m"}
                           ).status_code == 200
        time.sleep(0.6)
        resp = client.post("/v1/responses", headers=auth(), json={"model": "openai/m"})

    error = assert_envelope(resp, 502, "provider_error", code="upstream_error")
    assert error["message"] == "openai closed the connection before it answered"
    assert fake.hung_up == [("POST", "/v1/responses")]  # once: never sent again


def test_the_proxy_follows_the_scheme_and_lower_case_wins():
    env = {"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:1",
           "HTTPS_PROXY": "http://secure:1"}

    assert proxies_for(env, "http://vllm.internal:8000/v1") == {"http": "http://lower:1"}
    assert proxies_for(env, "https://api.x.ai/v1") == {"https": "http://secure:1"}
    assert proxies_for({}, "https://api.x.ai/v1") == {}


def test_a_ca_bundle_from_the_environment_is_used_for_every_provider(make_client, tmp_path):
    ca = trustme.CA()
    bundle = tmp_path / "corp-ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    client = make_client(REQUESTS_CA_BUNDLE=str(bundle))

    upstreams = client.application.extensions["gateway"].upstreams.values()

    corp = ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode()))
    for upstream in upstreams:
        for session in (upstream.session, upstream.create_session):
            assert session.verify == str(bundle) and session.trust_env is False
            trusted = session.get_adapter("https://x").context.get_ca_certs(binary_form=True)
            assert [ssl.DER_cert_to_PEM_cert(c) for c in trusted] == [corp]  # that CA alone


@pytest.mark.parametrize("content", [None, "not a certificate\n"])
def test_a_ca_bundle_that_cannot_be_read_stops_the_start_saying_so(make_client, tmp_path,
                                                                    content):
    bundle = tmp_path / "corp-ca.pem"
    if content is not None:
        bundle.write_text(content)

    with pytest.raises(ConfigError, match="REQUESTS_CA_BUNDLE.*corp-ca.pem"):
        make_client(REQUESTS_CA_BUNDLE=str(bundle))


def test_a_cookie_a_provider_sets_never_rides_on_the_next_call(cancel, upstream):
    upstream.post(cancel_url("openai", "a"), json=upstream_response("a"),
                  headers={"Set-Cookie": "session=client-a-secret; Path=/"})
    upstream.post(cancel_url("openai", "b"), json=upstream_response("b"))

    assert cancel("a", provider="openai").status_code == 200
    assert cancel("b", provider="openai").status_code == 200

    assert "Cookie" not in upstream.calls[1].request.headers
