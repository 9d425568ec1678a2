"""Prometheus metrics: requests, provider latency and errors, store errors, background runs,
webhooks.

Under gunicorn every worker is its own process, so gunicorn.conf.py points
prometheus_client's multiprocess mode at a folder (PROMETHEUS_MULTIPROC_DIR):
each worker writes its counts there and /metrics adds them all up. Without
that variable (tests, a single process) the process's own registry is served.
"""

import time
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from providers.errors import ProviderError

REQUESTS = Counter(
    "gateway_requests_total", "Requests answered, by route, status and provider.",
    ["route", "status", "provider"],
)
UPSTREAM_LATENCY = Histogram(
    "gateway_upstream_latency_seconds", "Time of one provider call, retries included.",
    ["provider"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40),
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total", "Provider calls that failed, by kind of failure.",
    ["provider", "kind"],
)

STORE_ERRORS = Counter(
    "gateway_store_errors_total", "Response store reads and writes that failed.",
    ["operation"],
)
RUNS = Counter(
    "gateway_background_runs_total", "Background responses the gateway ran, by how they ended.",
    ["provider", "status"],
)
WEBHOOK_DELIVERED = Counter("gateway_webhook_events_delivered_total",
                            "Webhook events an endpoint took (2xx).")
WEBHOOK_FAILED = Counter("gateway_webhook_attempts_failed_total",
                         "Webhook attempts that failed: another status, a timeout, no connection.")
WEBHOOK_DROPPED = Counter("gateway_webhook_events_dropped_total",
                          "Webhook events given up after WEBHOOK_MAX_AGE.")
WEBHOOK_OUTBOX = Gauge("gateway_webhook_outbox_depth", "Webhook events not yet delivered.",
                       multiprocess_mode="livemax")
WEBHOOK_LATENCY = Histogram(
    "gateway_webhook_delivery_seconds", "From a response's ending to its event's delivery.",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400),
)


@contextmanager
def upstream_call(provider):
    """Time one provider call and count it if it fails."""
    start = time.perf_counter()
    try:
        yield
    except ProviderError as exc:
        UPSTREAM_ERRORS.labels(provider, type(exc).__name__).inc()
        raise
    finally:
        UPSTREAM_LATENCY.labels(provider).observe(time.perf_counter() - start)


def count_store_error(operation):
    """Count one failed store call ("get" or "record")."""
    STORE_ERRORS.labels(operation).inc()


def count_request(route, status, provider):
    """Count one answered request."""
    REQUESTS.labels(route, str(status), provider).inc()


def render(metrics_dir):
    """The metrics page in Prometheus text format, and its content type."""
    if metrics_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=metrics_dir)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


def count_run(provider, status):
    """Count one background run that ended (completed, incomplete, failed or cancelled)."""
    RUNS.labels(provider, status).inc()
