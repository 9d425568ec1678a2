"""Read the gateway's configuration from the environment, once, into one object."""

import hashlib
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from requests.utils import should_bypass_proxies

from background import Runner
from conversations import Limits
from owners import Owner
from providers import DEFAULT_BASE_URLS, KEY_OPTIONAL, PROVIDERS, Upstream, connect
from providers.translate import HOSTED_TOOLS
from store import StoreError, open_store
from webhooks import Config as WebhookConfig
from webhooks import Notifier, decoded_secret

DEFAULT_UPSTREAM_TIMEOUT = 20.0  # seconds to wait for a provider's answer
# How gunicorn runs the app; keep these equal to the defaults in gunicorn.conf.py.
WORKER_CLASSES = ("gevent", "gthread")
DEFAULT_WORKER_CLASS = "gevent"
DEFAULT_CONNECTIONS = 4000  # gevent: client connections a worker serves at once
DEFAULT_THREADS = 32  # gthread: threads a worker serves requests with
DEFAULT_MAX_CONTENT_LENGTH = 16 * 1024 * 1024  # bytes; room for a create with images inline
DEFAULT_BODY_TIMEOUT = 20.0  # seconds for a request body to arrive whole (16 MiB at 1 MB/s)
# JSON values in a request body (objects, arrays, their items and members): parsing one
# and encoding it again for the provider costs up to 4 µs (a float of 17 digits), so
# 100,000 hold a worker under half a second; a long agent conversation with its tools
# holds tens of thousands.
DEFAULT_MAX_BODY_VALUES = 100_000
# Bytes of request bodies over a MiB a worker holds at once, from reading one to the end of
# its request: one costs about six times its size while parsed and encoded again (16 MiB of
# Chinese text: 90 MB), so two of the largest at once: sixteen sent together grew a worker
# by 119 MB and held its other requests 0.54 s, against 592 MB and 3 s unbounded
# (docs/benchmarks-large-bodies.md); twice this held them 1.2 s.
DEFAULT_BODIES_IN_FLIGHT = 32 * 1024 * 1024
DEFAULT_STORE_URL = "sqlite:///gateway.sqlite3"  # a file in the working directory
DEFAULT_POOL_SIZE = 10  # PostgreSQL connections a worker holds at most
DEFAULT_WEBHOOK_MAX_AGE = 72 * 3600  # seconds a webhook event is retried for
DEFAULT_WEBHOOK_RETRY_BASE = 5.0  # seconds before a webhook's first retry; then doubling
DEFAULT_WEBHOOK_TIMEOUT = 10.0  # seconds one webhook attempt may take
DEFAULT_WEBHOOK_CONCURRENCY = 8  # webhook attempts at once, per endpoint and worker
DEFAULT_WEBHOOK_WATCH_EVERY = 5.0  # seconds between two looks at a background response
DEFAULT_STORE_TTL = 30 * 24 * 3600  # seconds; OpenAI keeps responses 30 days
DEFAULT_CONVERSATION_ITEMS = 10_000  # items a conversation may hold
DEFAULT_ITEMS_PER_ADD = 20  # items one request may add to a conversation, as at OpenAI
# Background responses run at once per worker; more wait queued. A gevent worker holds
# as many runs as connections; a gthread worker pays a thread's stack for each.
DEFAULT_BACKGROUND_THREADS = {"gevent": DEFAULT_CONNECTIONS, "gthread": 16}
DEFAULT_BACKGROUND_LEASE = 30.0  # seconds without a heartbeat before a run counts as lost
MIN_SECRET = 16  # characters in each GATEWAY_SECRET
DEFAULT_PORTS = {"http": "80", "https": "443"}


class ConfigError(RuntimeError):
    """The environment cannot make a working gateway; the message says what to set.

    A RuntimeError, because gunicorn prints those as one line and exits.
    """


@dataclass(frozen=True)
class Settings:
    """Everything the request path needs, built once at app creation."""

    key_digests: tuple[bytes, ...]  # SHA-256 of each accepted client key
    owners: dict[bytes, Owner]  # key digest -> whose responses it sees; {}: shared by all
    unkeyed_owners: bool  # keys' responses are theirs, but no secret keys their owner ids
    probe_unknown: bool  # ask the providers about an id the store does not know
    hosted_tools: str  # HOSTED_TOOLS: "drop" or "refuse" a hosted tool at a Chat-only provider
    auth_disabled: bool
    upstreams: dict[str, Upstream]  # configured providers only, in PROVIDERS order
    max_content_length: int  # larger request bodies get a 413
    body_timeout: float  # a body that takes longer to arrive gets a 408
    max_body_values: int  # a body with more JSON values gets a 400
    bodies_in_flight: int  # bytes of large bodies a worker holds at once; more wait
    conversations: Limits  # how much a conversation holds, and one request may add
    metrics_need_key: bool  # METRICS_AUTH=required: /metrics asks for a gateway key
    metrics_dir: str | None  # PROMETHEUS_MULTIPROC_DIR: add up every worker's metrics
    store: object  # the response store (store/), opened from STORE_URL and STORE_TTL
    runner: Runner  # runs background responses at providers without native cancel
    notifier: Notifier | None  # webhooks when background responses end; None: none set

    @classmethod
    def from_env(cls, env):
        """Build Settings from an environment mapping, or raise ConfigError."""
        auth = env.get("GATEWAY_AUTH", "").strip().lower()
        if auth not in ("", "enabled", "disabled"):
            raise ConfigError("GATEWAY_AUTH must be 'disabled' or unset")
        scope = env.get("RESPONSE_SCOPE", "").strip().lower() or "key"
        if scope not in ("key", "shared"):
            raise ConfigError("RESPONSE_SCOPE must be 'key' or 'shared'")
        metrics_auth = env.get("METRICS_AUTH", "").strip().lower()
        if metrics_auth not in ("", "none", "required"):
            raise ConfigError("METRICS_AUTH must be 'required' or unset")
        probe = env.get("PROBE_UNKNOWN_IDS", "").strip().lower() or "on"
        if probe not in ("on", "off"):
            raise ConfigError("PROBE_UNKNOWN_IDS must be 'on' or 'off'")
        keys = [k.strip() for k in env.get("GATEWAY_API_KEYS", "").split(",") if k.strip()]
        if not keys and auth != "disabled":
            raise ConfigError(
                "GATEWAY_API_KEYS is not set: set it to the comma-separated keys clients "
                "may use, or set GATEWAY_AUTH=disabled to run without authentication"
            )
        read_timeout = _positive_number(env, "UPSTREAM_TIMEOUT", DEFAULT_UPSTREAM_TIMEOUT)
        worker_class = env.get("WORKER_CLASS", "").strip() or DEFAULT_WORKER_CLASS
        if worker_class not in WORKER_CLASSES:
            raise ConfigError(f"WORKER_CLASS must be one of {', '.join(WORKER_CLASSES)}, "
                              f"not {worker_class!r}")
        if worker_class == "gevent":
            serving = int(_positive_number(env, "WORKER_CONNECTIONS", DEFAULT_CONNECTIONS))
        else:
            serving = int(_positive_number(env, "GUNICORN_THREADS", DEFAULT_THREADS))
        runs = int(_positive_number(env, "BACKGROUND_THREADS",
                                    DEFAULT_BACKGROUND_THREADS[worker_class]))
        hosted = env.get("HOSTED_TOOLS", "").strip().lower() or "drop"
        if hosted not in HOSTED_TOOLS:
            raise ConfigError("HOSTED_TOOLS must be 'drop' or 'refuse'")
        lease = _positive_number(env, "BACKGROUND_LEASE", DEFAULT_BACKGROUND_LEASE)
        body_limit = int(_positive_number(env, "MAX_CONTENT_LENGTH", DEFAULT_MAX_CONTENT_LENGTH))
        store = _store(env, serving + runs)
        secrets = _secrets(env, store) if scope == "key" and auth != "disabled" else []
        upstreams = _upstreams(env, read_timeout, serving + runs)
        runner = Runner(store, runs, lease)
        notifier = _notifier(env, store, upstreams, runner)
        return cls(
            key_digests=tuple(key_digest(k) for k in keys),
            owners={} if scope == "shared" else {key_digest(k): Owner.of(k, secrets) for k in keys},
            unkeyed_owners=scope == "key" and auth != "disabled" and not secrets,
            probe_unknown=probe == "on",
            hosted_tools=hosted,
            auth_disabled=auth == "disabled",
            # Every request and every background run may hold a connection at once.
            upstreams=upstreams,
            max_content_length=body_limit,
            body_timeout=_positive_number(env, "BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT),
            max_body_values=_max_body_values(env),
            bodies_in_flight=int(_positive_number(env, "BODIES_IN_FLIGHT",
                                                  DEFAULT_BODIES_IN_FLIGHT)),
            metrics_need_key=metrics_auth == "required",
            metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
            conversations=Limits(
                int(_positive_number(env, "MAX_CONVERSATION_ITEMS", DEFAULT_CONVERSATION_ITEMS)),
                int(_positive_number(env, "MAX_ITEMS_PER_ADD", DEFAULT_ITEMS_PER_ADD))),
            store=store,
            runner=runner,
            notifier=notifier,
        )


def _max_body_values(env):
    """MAX_BODY_VALUES, or MAX_BODY_OBJECTS, its name when it counted objects and arrays only."""
    name = "MAX_BODY_VALUES" if env.get("MAX_BODY_VALUES") else "MAX_BODY_OBJECTS"
    return int(_positive_number(env, name, DEFAULT_MAX_BODY_VALUES))


def key_digest(key):
    """Hash a key so comparisons are constant-time whatever the lengths."""
    return hashlib.sha256(key.encode()).digest()


def _secrets(env, store):
    """The secrets owner ids are keyed with (the first keys new ones; owners.py): those
    GATEWAY_SECRET lists, else one the store keeps apart from its data, else none."""
    listed = [s.strip() for s in env.get("GATEWAY_SECRET", "").split(",") if s.strip()]
    if any(len(secret) < MIN_SECRET for secret in listed):
        raise ConfigError(f"GATEWAY_SECRET: each secret must be at least {MIN_SECRET} "
                          "characters (e.g. python -c 'import secrets; "
                          "print(secrets.token_hex(32))')")
    if listed:
        return [secret.encode() for secret in listed]
    try:
        local = store.local_secret()
    except OSError as exc:
        raise ConfigError(f"cannot keep the owner secret beside the store: {exc}") from None
    return [local] if local else []


def _notifier(env, store, upstreams, runner):
    """The webhooks WEBHOOK_URL and WEBHOOK_SECRET ask for (webhooks.py), or None."""
    urls = [u.strip() for u in env.get("WEBHOOK_URL", "").split(",") if u.strip()]
    listed = [s.strip() for s in env.get("WEBHOOK_SECRET", "").split(",") if s.strip()]
    if not urls:
        if listed:
            raise ConfigError("WEBHOOK_SECRET is set but WEBHOOK_URL is not: set both")
        return None
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"WEBHOOK_URL must be http:// or https:// URLs, comma-separated; "
                              f"not {url[:80]!r}")
    if not listed:
        raise ConfigError("WEBHOOK_URL is set but WEBHOOK_SECRET is not: set it to the "
                          "endpoint's signing secret, whsec_ and base64")
    try:
        secrets = tuple(decoded_secret(secret) for secret in listed)
    except ValueError as exc:
        raise ConfigError(f"WEBHOOK_SECRET {exc}") from None
    config = WebhookConfig(
        urls=tuple(urls), secrets=secrets,
        max_age=_positive_number(env, "WEBHOOK_MAX_AGE", DEFAULT_WEBHOOK_MAX_AGE),
        retry_base=_positive_number(env, "WEBHOOK_RETRY_BASE", DEFAULT_WEBHOOK_RETRY_BASE),
        timeout=_positive_number(env, "WEBHOOK_TIMEOUT", DEFAULT_WEBHOOK_TIMEOUT),
        concurrency=int(_positive_number(env, "WEBHOOK_CONCURRENCY",
                                         DEFAULT_WEBHOOK_CONCURRENCY)),
        watch_every=_positive_number(env, "WEBHOOK_WATCH_EVERY", DEFAULT_WEBHOOK_WATCH_EVERY),
        verify=_ca_bundle(env))
    notifier = Notifier(config, store, upstreams, runner)
    runner.on_end = notifier.ended
    return notifier


def _upstreams(env, read_timeout, pool_size):
    """Connect every provider whose settings are present."""
    # What requests would look up in the environment on every call, read once here.
    verify = _ca_bundle(env)
    upstreams = {}
    for name in PROVIDERS:
        prefix = name.upper()
        key = env.get(f"{prefix}_API_KEY", "").strip()
        url = env.get(f"{prefix}_BASE_URL", "").strip()
        if not key and not (url and name in KEY_OPTIONAL):
            continue
        url = url or DEFAULT_BASE_URLS.get(name)
        if not url:
            raise ConfigError(f"{prefix}_BASE_URL is not set: {name} has no default endpoint")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{prefix}_BASE_URL must be an http(s) URL")
        try:
            upstreams[name] = connect(name, url, key or None, read_timeout, pool_size,
                                      proxies=proxies_for(env, url), verify=verify)
        except OSError as exc:  # connect() reads the CA bundle (once): missing, or no PEM
            raise ConfigError(f"REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) {verify!r} is not a "
                              f"readable CA bundle: {exc.strerror or exc}") from None
    return upstreams


def proxies_for(env, url):
    """The proxy for calls to `url`, as requests and curl would choose it from HTTP_PROXY,
    HTTPS_PROXY, ALL_PROXY and NO_PROXY (either case); {} for none."""
    parts = urlsplit(url)
    if bypasses_proxy(url, _setting(env, "NO_PROXY")):
        return {}
    proxy = _setting(env, f"{parts.scheme}_PROXY") or _setting(env, "ALL_PROXY")
    return {parts.scheme: proxy} if proxy else {}


def bypasses_proxy(url, no_proxy):
    """Whether NO_PROXY says `url` goes direct: requests' rules (names, leading dots,
    '*', IPv4 networks in CIDR), and curl's where requests misses them: an entry with a
    port (matched against the URL's port, 443 when an https URL names none), IPv6 in
    brackets or as a network."""
    if not no_proxy:
        return False
    if should_bypass_proxies(url, no_proxy):
        return True
    parts = urlsplit(url)
    host, port = (parts.hostname or "").lower(), str(parts.port or DEFAULT_PORTS[parts.scheme])
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in no_proxy.replace(" ", "").lower().split(","):
        name, network, entry_port = _no_proxy_entry(entry)
        if entry_port not in (None, port):
            continue
        if network is not None and address is not None and address in network:
            return True
        name = name.lstrip(".")
        if name and address is None and (host == name or host.endswith("." + name)):
            return True
    return False


def _no_proxy_entry(entry):
    """(name, network or None, port or None) of a NO_PROXY entry."""
    name, port = entry, None
    if entry.startswith("["):  # [IPv6] or [IPv6]:port
        name, _, rest = entry[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif entry.count(":") == 1:  # name:port, IPv4:port
        name, port = entry.split(":")
    try:
        return name, ipaddress.ip_network(name, strict=False), port
    except ValueError:
        return name, None, port


def _ca_bundle(env):
    """How to verify a server's TLS, as requests reads the environment: a CA bundle's
    path, or True for certifi's."""
    return _setting(env, "REQUESTS_CA_BUNDLE") or _setting(env, "CURL_CA_BUNDLE") or True


def _setting(env, name):
    """A variable that tools spell in either case (the lower-case one wins, as in curl)."""
    return (env.get(name.lower()) or env.get(name.upper()) or "").strip()


def _store(env, concurrency):
    """Open the response store STORE_URL names, else DATABASE_URL (as PaaS platforms hand
    out PostgreSQL), else the SQLite default (a database that is down is no error yet).
    A PostgreSQL pool holds up to STORE_POOL_SIZE connections a worker: by default its
    concurrency, at most DEFAULT_POOL_SIZE (store calls take milliseconds)."""
    url = (env.get("STORE_URL", "").strip() or env.get("DATABASE_URL", "").strip()
           or DEFAULT_STORE_URL)
    ttl = _positive_number(env, "STORE_TTL", DEFAULT_STORE_TTL)
    conversation_ttl = _positive_number(env, "CONVERSATION_TTL", ttl)
    pool_size = int(_positive_number(env, "STORE_POOL_SIZE",
                                     min(concurrency, DEFAULT_POOL_SIZE)))
    try:
        return open_store(url, ttl, conversation_ttl, pool_size)
    except ValueError as exc:
        raise ConfigError(f"STORE_URL {exc}") from exc
    except StoreError as exc:
        raise ConfigError(f"STORE_URL: {exc}") from exc


def _positive_number(env, name, default):
    """Read a positive number from the environment, or raise ConfigError."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number, not {raw!r}")
    return value
