"""HTTP plumbing shared by every provider: one Session each, timeouts, retries, limits."""

import functools
import json
import math
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import requests
from requests.adapters import DEFAULT_CA_BUNDLE_PATH, HTTPAdapter
from requests.auth import AuthBase
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ProtocolError
from urllib3.util.retry import Retry
from urllib3.util.ssl_ import create_urllib3_context

from providers.errors import BadGateway, GatewayTimeout, NotFound, RateLimited, Rejected

CONNECT_TIMEOUT = 5.0  # seconds; a healthy provider accepts a connection in far less
# A kept-alive connection idle longer than this is not used again. Providers close idle
# connections (uvicorn, under vLLM and many self-hosted servers, after 5 s; gunicorn
# after 2 s), and a request sent just as one does fails: a create cannot then be sent
# again, since the provider may have started it. Reconnecting costs a handshake.
REUSE_IDLE = 1.0  # seconds
MAX_BODY_BYTES = 8 * 1024 * 1024  # a Response object is kilobytes; this much is a broken upstream
MAX_MESSAGE_CHARS = 500  # upstream error messages are passed on, but not whole pages of them

# Retry only what never did harm upstream, or what may safely be repeated:
# connection failures (the request never arrived) and 429/502/503/504 (refused
# or lost at the provider's edge). Retrieve and cancel are idempotent, so POST
# is allowed. Read errors are not retried: the provider may have started on
# the request. (read=False, not 0: 0 would wrap a read timeout so requests
# reports it as a connection error; False lets it surface as the ReadTimeout it is.)
RETRY = Retry(
    total=2,
    connect=2,
    read=False,
    status=2,
    other=0,
    allowed_methods=None,
    status_forcelist=(429, 502, 503, 504),
    backoff_factor=0.25,
    retry_after_max=2,  # honour Retry-After, but never park a worker thread for long
    raise_on_status=False,  # hand the last answer back so its status can be mapped
)
# A create is not idempotent: after a 502, 503 or 504 the provider may already be
# generating (and billing) the response, and a retry would start a second one.
# Only a refused connection and a 429 (the provider declined to start) are retried.
RETRY_CREATE = RETRY.new(status_forcelist=(429,))


@dataclass(frozen=True)
class Upstream:
    """One configured provider: where it lives, how long to wait, and its Sessions."""

    name: str
    base_url: str
    read_timeout: float
    session: requests.Session = field(repr=False)  # calls that may be repeated (RETRY)
    create_session: requests.Session = field(repr=False)  # calls that may not (RETRY_CREATE)
    secret: str | None = field(default=None, repr=False)  # only to scrub it from messages


class NoCookies(requests.cookies.RequestsCookieJar):
    """A jar that keeps nothing: a cookie one provider answer sets must never ride along
    on the next call, which may be another client's. It also spares requests the work."""

    def extract_cookies(self, response, request):
        pass

    def set_cookie(self, cookie, *args, **kwargs):
        pass


class HeaderAuth(AuthBase):
    """Send the provider key in one header. Being the Session's auth also spares
    requests a look for ~/.netrc credentials on every call."""

    def __init__(self, header, value):
        self.header, self.value = header, value

    def __call__(self, request):
        request.headers[self.header] = self.value
        return request


@functools.cache
def tls_context(verify=True):
    """One TLS context for every provider connection that trusts `verify`'s CAs (True:
    certifi's bundle, as requests would), the bundle read once per process."""
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    where = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
    if os.path.isdir(where):
        context.load_verify_locations(capath=where)
    else:
        context.load_verify_locations(cafile=where)
    return context


class RecentOnly:
    """A connection pool that hands out a kept-alive connection only if it has been idle
    less than REUSE_IDLE; an older one is closed, and urllib3 reconnects it."""

    def _get_conn(self, timeout=None):
        conn = super()._get_conn(timeout)
        idle_since = getattr(conn, "idle_since", None)
        if idle_since is not None and time.monotonic() - idle_since > REUSE_IDLE:
            conn.close()
        return conn

    def _put_conn(self, conn):
        if conn is not None:
            conn.idle_since = time.monotonic()
        super()._put_conn(conn)


class RecentHTTPPool(RecentOnly, HTTPConnectionPool):
    pass


class RecentHTTPSPool(RecentOnly, HTTPSConnectionPool):
    pass


RECENT_POOLS = {"http": RecentHTTPPool, "https": RecentHTTPSPool}


class SharedTLS(HTTPAdapter):
    """An adapter whose connections, to a provider and to an HTTPS proxy, share one
    TLS context. requests would have urllib3 build a context and read the CA bundle
    for every new connection: 25 ms of CPU for certifi's, once per stream."""

    def __init__(self, context, **kwargs):
        self.context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, ssl_context=self.context, **kwargs)
        self.poolmanager.pool_classes_by_scheme = RECENT_POOLS

    def proxy_manager_for(self, proxy, **kwargs):
        manager = super().proxy_manager_for(proxy, ssl_context=self.context,
                                            proxy_ssl_context=self.context, **kwargs)
        manager.pool_classes_by_scheme = RECENT_POOLS
        return manager

    def cert_verify(self, conn, url, verify, cert):
        """Leave the bundle to the context: requests would name it to the pool again (so
        each new connection would read it) and stat it on every call; it was read at
        start, where a missing one already stopped the gateway."""
        conn.ca_certs = conn.ca_cert_dir = None


def new_session(auth, pool_size, retry, proxies=None, verify=True):
    """Build a Session with a retry policy and a pool sized for gunicorn's threads.

    It reads nothing from the environment per call (trust_env off: no proxy, netrc or
    CA-bundle look-ups on every request): config.py reads proxies and the CA bundle
    once, at start, and passes them here.
    """
    adapter = SharedTLS(tls_context(verify), pool_connections=1, pool_maxsize=pool_size,
                        max_retries=retry)
    session = requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.trust_env = False
    session.proxies = dict(proxies or {})
    session.verify = verify
    session.cookies = NoCookies()
    session.auth = auth
    return session


def path_segment(value):
    """Percent-encode `value` whole, so it stays exactly one URL path segment."""
    return quote(value, safe="")


def request_json(upstream, method, path, body=None, replay_safe=True, params=None):
    """Call the provider and return its JSON object, or raise a ProviderError.

    `body` is sent as JSON, `params` as the query string; `replay_safe=False` marks
    a call that must not be repeated after it may have reached the provider.
    """
    resp = _send(upstream, method, path, body, replay_safe, params)
    with resp:
        payload = _read_json(upstream, resp)
    _raise_for_status(upstream, resp.status_code, resp.headers, payload)
    if not isinstance(payload, dict):
        name = upstream.name
        raise BadGateway(name, f"{name} answered with something other than a JSON object")
    return payload


def open_stream(upstream, path, body, method="POST"):
    """Ask for a stream (POST a body, or GET one again); return the open response once
    the provider has accepted it (2xx), or raise the ProviderError its refusal means."""
    resp = _send(upstream, method, path, body, replay_safe=method == "GET")
    if not 200 <= resp.status_code < 300:
        with resp:
            payload = _read_json(upstream, resp)
        _raise_for_status(upstream, resp.status_code, resp.headers, payload)
    return resp


def abort(resp):
    """Shut a streamed response's connection, from any thread: a read blocked on it
    returns at once, and the provider sees its client go away (and stops generating).

    However the provider frames the stream (chunked, by length, or ended by closing
    the connection), over TLS or through a proxy. A shut connection is never reused:
    the read under way fails or ends, and urllib3 closes what it cannot finish.
    """
    raw = resp.raw
    # The socket the body is read from. Not always raw.connection.sock: for a response
    # that ends by closing, http.client hands the socket over to the response and the
    # connection forgets it. urllib3 keeps that socket's shutdown from before the
    # hand-over. (Its public raw.shutdown() shuts reading only, through SSLSocket's
    # shutdown, which unwraps TLS under the reader: socket.socket's is called instead.)
    connection = raw.connection
    if connection is None:
        return  # finished and back in the pool, where another call may hold it now
    shutdown = getattr(raw, "_sock_shutdown", None)
    sock = getattr(shutdown, "__self__", None) or connection.sock
    while sock is not None and not isinstance(sock, socket.socket):
        sock = getattr(sock, "socket", None)  # TLS inside an HTTPS proxy's TLS: the outer one
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # already closed


def _send(upstream, method, path, body, replay_safe, params=None):
    """Send one request; the response comes back unread (stream=True)."""
    name = upstream.name
    session = upstream.session if replay_safe else upstream.create_session
    url = f"{upstream.base_url}/{path}"
    try:
        # Prepared and sent through the adapter: what Session.request adds is what these
        # Sessions turn off (cookies, netrc and the environment's settings, hooks), and it
        # cost a call 10 to 20 % of its CPU. The adapter follows no redirect (one could
        # carry the provider key elsewhere); its own retries still apply.
        request = requests.PreparedRequest()
        request.prepare(method=method, url=url, headers=session.headers, json=body,
                        params=params, auth=session.auth, cookies=session.cookies)
        return session.get_adapter(url).send(
            request, stream=True,  # read the body ourselves, under a size cap
            timeout=(CONNECT_TIMEOUT, upstream.read_timeout),
            verify=session.verify, proxies=session.proxies)
    except requests.ConnectionError as exc:  # includes ConnectTimeout
        if _connected(exc):
            raise BadGateway(name, f"{name} closed the connection before it answered") from exc
        raise BadGateway(name, f"could not connect to {name}") from exc
    except requests.Timeout as exc:
        raise GatewayTimeout(
            name, f"{name} did not answer within {upstream.read_timeout:g}s"
        ) from exc
    except requests.RequestException as exc:
        raise BadGateway(name, f"the request to {name} failed") from exc


def _connected(exc):
    """Whether a requests ConnectionError came after the connection was made: urllib3's
    ProtocolError, the provider hanging up on the request (not refused, unresolved, a
    TLS handshake or a proxy that failed)."""
    reason = exc.args[0] if exc.args else None
    return isinstance(getattr(reason, "reason", reason), ProtocolError)  # bare, or retried


def _read_json(upstream, resp):
    """Read the body within the size cap and time budget; None if it is not JSON."""
    name = upstream.name
    too_big = BadGateway(name, f"{name} sent a body over {MAX_BODY_BYTES // 2**20} MiB")
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:  # garbage: read and see
        raise too_big
    # The read timeout bounds each socket read; this bounds the whole body, so a
    # provider dripping bytes cannot hold a worker thread indefinitely.
    deadline = time.monotonic() + upstream.read_timeout
    chunks, size = [], 0
    try:
        for chunk in resp.iter_content(64 * 1024):
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise too_big
            if time.monotonic() > deadline:
                raise GatewayTimeout(name, f"{name} did not finish its answer in time")
            chunks.append(chunk)
    except requests.RequestException as exc:
        raise BadGateway(name, f"{name} broke off its answer") from exc
    try:
        return strict_json(b"".join(chunks))
    except ValueError:
        return None


class NestedTooDeep(ValueError):
    """JSON nested deeper than the parser's recursion allows: refused, like any bad JSON."""


def strict_json(data):
    """Parse JSON (str or bytes), refusing NaN, Infinity and numbers too large for a float
    (Python's extensions, which we could not pass on) and nesting deeper than the parser
    can go (NestedTooDeep, never RecursionError)."""
    if isinstance(data, (bytes, bytearray)):
        data = data.decode(json.detect_encoding(data), "surrogatepass")  # as json.loads does
    try:
        return _STRICT.decode(data)
    except RecursionError:
        raise NestedTooDeep("JSON nested too deeply") from None


def _not_json(constant):
    raise ValueError(f"{constant} is not JSON")


def _finite(text):
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"{text} is too large a number")
    return value


# One decoder for every parse: building one per call costs a stream 2 µs an event.
_STRICT = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite)


def _raise_for_status(upstream, status, headers, payload):
    """Turn a non-2xx answer into the matching ProviderError."""
    if 200 <= status < 300:
        return
    name = upstream.name
    message, param, code = error_fields(upstream, payload)
    detail = f"{name}: {message}" if message else f"{name} answered HTTP {status}"
    if status == 404:
        raise NotFound(name, detail)
    if status in (401, 403):
        # The gateway's own provider key was refused: not the client's fault.
        raise BadGateway(name, f"{name} refused the gateway's credentials (HTTP {status})")
    if status == 429:
        raise RateLimited(name, detail, retry_after=headers.get("Retry-After"))
    if 400 <= status < 500:
        raise Rejected(name, detail, status, param=param, code=code)
    raise BadGateway(name, f"{name} answered HTTP {status}")


def error_fields(upstream, payload):
    """Pull (message, param, code) out of an OpenAI-style error body, scrubbed."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, str):
        error = {"message": error}
    if not isinstance(error, dict):
        return None, None, None
    message, param, code = (error.get(k) for k in ("message", "param", "code"))
    return (
        _scrub(upstream, message) if isinstance(message, str) and message else None,
        _scrub(upstream, param) if isinstance(param, str) else None,
        _scrub(upstream, str(code)) if isinstance(code, (str, int)) else None,
    )


def _scrub(upstream, text):
    """Cut an upstream string to size and blank out the provider key if it echoes it."""
    text = text[:MAX_MESSAGE_CHARS]
    return text.replace(upstream.secret, "[redacted]") if upstream.secret else text
