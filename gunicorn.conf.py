# gunicorn settings for the gateway. The Procfile runs gunicorn from this
# folder, where gunicorn reads this file by itself; any value here can still be
# overridden on the command line or through GUNICORN_CMD_ARGS (but for the
# worker class: set WORKER_CLASS, which the app reads too).
import os

# How a worker serves its requests: gevent's cooperative worker (the default),
# or gthread (a thread per request). The app's code is the same blocking code
# either way. An LLM stream lasts tens of seconds and holds its request all
# along, and a gevent worker holds thousands of them, a greenlet each, where a
# thread per stream runs out at tens: docs/benchmarks-concurrency.md measures both.
worker_class = os.environ.get("WORKER_CLASS") or "gevent"
if worker_class not in ("gevent", "gthread"):
    raise SystemExit(f"WORKER_CLASS must be gevent or gthread, not {worker_class!r}")
if worker_class == "gevent":
    # Patch here, before the app is loaded (preload_app below): gunicorn's own patch
    # comes in each worker, after the app has imported ssl, requests and threading,
    # which works less well and warns so at start.
    import _socket

    import gevent
    from gevent import monkey
    from gevent.resolver.thread import Resolver

    monkey.patch_all()

    class NumericFirstResolver(Resolver):
        """gevent's resolver, but a host that is already an IP address is read in place.

        gevent looks every host up on a native thread, even 127.0.0.1, so each new
        provider connection handed the GIL to that thread and back: 0.3 of the 2.6 ms
        of CPU a streaming create took (docs/performance.md). A name still goes to
        the thread (and the system's resolver, /etc/hosts included), as with gevent's.
        """

        def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
            try:  # the NUMERIC flags make this fail, never block, for a name
                return _socket.getaddrinfo(host, port, family, type, proto,
                                           flags | _socket.AI_NUMERICHOST | _socket.AI_NUMERICSERV)
            except (_socket.gaierror, UnicodeError):
                return super().getaddrinfo(host, port, family, type, proto, flags)

    gevent.config.resolver = NumericFirstResolver

import re  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402

# Where to listen. A PaaS router sets PORT and expects every interface;
# without it, stay on loopback, as gunicorn itself would.
bind = f"0.0.0.0:{os.environ['PORT']}" if os.environ.get("PORT") else "127.0.0.1:8080"

# Worker processes: WEB_CONCURRENCY, as PaaS platforms size it, else 2 (one per core here).
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)

# gevent: the client connections a worker serves at once. 2,000 open streams on
# the two workers took about 250 MB PSS for the whole tree
# (docs/benchmarks-concurrency.md); 4,000 a worker leaves room for a burst that
# the two workers split unevenly.
# The app sizes its run pool and upstream connection pools from the same
# variable (config.py), so no call waits for a pooled connection.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS") or 4000)
# Each stream holds two descriptors (its client's and its provider's): lift the
# soft limit on open files to the hard one, which platforms set far higher.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft != _hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))

# gthread: threads per worker. A kept-alive client connection stays with the
# worker that accepted it, and connections split unevenly between workers, so
# each worker gets enough threads to serve every connection a busy client may
# hold: at 32 connections to a 50 ms provider, 8, 16 and 32 threads served 277,
# 294 and 495 req/s (docs/benchmarks.md). A streaming create holds a thread for
# its whole length.
threads = int(os.environ.get("GUNICORN_THREADS") or 32)

# Build the app once, in the master: a bad configuration then stops the server
# with one line (instead of a traceback from every worker), and the workers
# share the loaded code's memory (48 MB PSS for the idle tree instead of 72).
preload_app = True

# A worker reports its heartbeat from its main thread (gthread) or greenlet
# (gevent), so a slow provider never gets a worker killed; the app answers 502/504 itself after
# UPSTREAM_TIMEOUT. This timeout is for a worker that is truly stuck, and stays
# above the slowest honest request (a provider call with its retries).
_upstream_timeout = float(os.environ.get("UPSTREAM_TIMEOUT") or 20)
timeout = int(3 * _upstream_timeout) + 30
# On deploy, let in-flight requests finish, and the background responses this
# worker runs (background.py): past this, the worker is killed and its runs are
# failed as lost once BACKGROUND_LEASE passes.
graceful_timeout = timeout

# Keep client connections open briefly between requests (behind a router, the
# router is the client).
keepalive = 5

# Access log to stdout, one line a request, with the status, the latency and
# the request id the app returns (never the Authorization header).
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'
errorlog = "-"

# No runtime control socket: the platform restarts processes, and several
# gateways on one host would otherwise contend for one default socket path.
control_socket_disable = True

# Metrics: every worker writes its counts to files in one folder, and /metrics
# adds them up (prometheus_client's multiprocess mode). The folder must be known
# before the app imports prometheus_client, so it is chosen here: a fresh one
# per start, unless PROMETHEUS_MULTIPROC_DIR names one.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="gateway-metrics-"))


# The files prometheus_client writes there: {counter,histogram,summary,gauge_<mode>}_<pid>.db.
METRIC_FILE = re.compile(r"(counter|histogram|summary|gauge_[a-z]+)_\d+\.db")


def on_starting(server):
    """Start counting from zero: remove the metric files a previous run left in the folder,
    and nothing else (an operator may point it at a folder that holds other files)."""
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(folder, mode=0o700, exist_ok=True)
    for name in os.listdir(folder):
        if METRIC_FILE.fullmatch(name):
            os.remove(os.path.join(folder, name))


def pre_fork(server, worker):
    """Freeze the preloaded app's objects out of the garbage collector's reach.

    A worker's full collection writes to every object it tracks, so each page of
    the app it inherited from this master would be copied into the worker: the
    frozen objects are never collected, and their pages stay shared. The tree's
    PSS at 2,000 streams: 162 MB instead of 173, and 214 instead of 231 once it
    has also run 2,000 background responses (docs/benchmarks-memory.md).
    """
    import gc

    gc.freeze()


def post_worker_init(worker):
    """On SIGTERM, let a worker's background runs finish within the graceful timeout, but
    start none still queued. Start the worker's webhook threads, if webhooks are set.

    gunicorn's own handler starts the graceful stop; ours, wrapped around it,
    only tells background.py, which fails the queued runs from its own thread,
    and any run still going just before the timeout ends.
    """
    import signal

    import background

    graceful = signal.getsignal(signal.SIGTERM)

    def stop(signum, frame):
        background.stop_starting(within=worker.cfg.graceful_timeout)
        graceful(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    # Each worker delivers webhooks from the store's outbox, whether or not requests come.
    notifier = worker.wsgi.extensions["gateway"].notifier
    if notifier:
        notifier.start()


def worker_exit(server, worker):
    """As a worker leaves: wait for its background runs (background.finish)."""
    import background

    background.finish()


def child_exit(server, worker):
    """Let prometheus_client forget a dead worker's live gauges (its counts stay)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
