"""GET /metrics: Prometheus text with requests, provider latency, provider and store errors."""

from prometheus_client.parser import text_string_to_metric_families

from gateway_process import free_port
from support import GATEWAY_KEY, cancel_url, upstream_response


def scrape(client, **kwargs):
    """Samples from /metrics as {(name, sorted labels): value}."""
    resp = client.get("/metrics", **kwargs)
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(resp.get_data(as_text=True))
        for sample in family.samples
    }


def delta(before, after, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


def test_requests_are_counted_by_route_status_and_provider(client, cancel, upstream):
    upstream.post(cancel_url("openai", "r1"), json=upstream_response("r1"))
    upstream.post(cancel_url("azure", "r2"), status=404)
    before = scrape(client)

    cancel("r1", provider="openai")
    cancel("r2", provider="azure")
    cancel("r3", provider="groq")
    client.get("/nowhere")

    after = scrape(client)
    route = "/v1/responses/<string(minlength=0):response_id>/cancel"
    assert delta(before, after, "gateway_requests_total",
                 route=route, status="200", provider="openai") == 1
    assert delta(before, after, "gateway_requests_total",
                 route=route, status="501", provider="") == 1
    assert delta(before, after, "gateway_requests_total",
                 route="unmatched", status="404", provider="") == 1


def test_provider_latency_and_errors_are_recorded(client, cancel, upstream):
    upstream.post(cancel_url("oracle", "r"), json=upstream_response("r"))
    upstream.post(cancel_url("vllm", "r"), status=500)
    before = scrape(client)

    cancel("r", provider="oracle")
    cancel("r", provider="vllm")

    after = scrape(client)
    assert delta(before, after, "gateway_upstream_latency_seconds_count", provider="oracle") == 1
    assert delta(before, after, "gateway_upstream_latency_seconds_count", provider="vllm") == 1
    assert delta(before, after, "gateway_upstream_errors_total",
                 provider="vllm", kind="BadGateway") == 1
    assert delta(before, after, "gateway_upstream_errors_total",
                 provider="oracle", kind="BadGateway") == 0


def test_metrics_are_public_by_default_and_can_require_a_key(make_client):
    assert make_client().get("/metrics").status_code == 200

    guarded = make_client(METRICS_AUTH="required")

    assert guarded.get("/metrics").status_code == 401
    ok = guarded.get("/metrics", headers={"Authorization": f"Bearer {GATEWAY_KEY}"})
    assert ok.status_code == 200


def test_store_failures_are_counted(make_client, upstream):
    down = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens
    shared, scoped = make_client(STORE_URL=down, RESPONSE_SCOPE="shared"), make_client(STORE_URL=down)
    upstream.post(cancel_url("openai", "r"), json=upstream_response("r"))
    before = scrape(shared)

    shared.post("/v1/responses/r/cancel?provider=openai",  # routed by hint, answered unstored
                headers={"Authorization": f"Bearer {GATEWAY_KEY}"})
    scoped.post("/v1/responses/r/cancel?provider=openai",  # a 503: whose it is is unknown
                headers={"Authorization": f"Bearer {GATEWAY_KEY}"})

    after = scrape(shared)
    assert delta(before, after, "gateway_store_errors_total", operation="get") == 2
    assert delta(before, after, "gateway_store_errors_total", operation="record") == 1