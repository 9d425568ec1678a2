"""Streamed generations: the server-sent-event parser, the Chat and Responses readers, and a
Generation against a provider on 127.0.0.1 that streams slowly (closed from another thread)."""

import ssl
import threading
import time
import tracemalloc

import pytest
import trustme

from config import proxies_for
from fake_proxy import FakeProxy
from fake_streaming import FakeStreamingProvider
from providers import PROVIDERS, connect
from providers.errors import BadGateway, RateLimited, Rejected
from providers.events import EventWriter
from providers.streaming import ChatReader, ResponsesReader, sse_data
from transports import ROUTES

KEY = "sk-stream-secret-0001"


class Raw:
    """A response's raw body that hands out the given chunks, as a socket might cut them."""

    def __init__(self, chunks):
        self.chunks = list(chunks)

    def read1(self, size):
        return self.chunks.pop(0) if self.chunks else b""


class Resp:
    def __init__(self, chunks):
        self.raw = Raw(chunks)


@pytest.fixture(scope="module")
def fake():
    with FakeStreamingProvider() as server:
        yield server


def upstream_at(url, name="anthropic", read_timeout=5):
    return connect(name, url, KEY, read_timeout, 4)


def upstream_on(routes, route, name="anthropic"):
    """A provider reached over `route`: its framing, TLS, proxy or tunnel."""
    url = routes.base_url(route)
    return connect(name, url, KEY, 5, 4, proxies=proxies_for(routes.env(), url),
                   verify=str(routes.ca_bundle))


def test_sse_events_cut_anywhere_with_crlf_comments_and_multiline_data():
    stream = (b': keep-alive\r\n\r\nevent: x\r\ndata: {"a":\r\ndata: 1}\r\n\r\n'
              b'data: {"b": 2}\n\ndata:{"c":\r3}\n\ndata: [DONE]\n\n')
    chunks = [stream[i:i + 7] for i in range(0, len(stream), 7)]

    # The bytes come with an event only where they can go out as they came: one line,
    # no carriage return inside (a client's parser would end the line there).
    assert list(sse_data(upstream_at("http://x"), Resp(chunks))) == [
        ({"a": 1}, None), ({"b": 2}, b'{"b": 2}'), ({"c": 3}, None), ("[DONE]", None)]


def test_an_event_left_open_at_the_end_still_counts_and_junk_is_bad_gateway():
    upstream = upstream_at("http://x")

    assert list(sse_data(upstream, Resp([b'data: {"a": 1}']))) == [({"a": 1}, b'{"a": 1}')]
    with pytest.raises(BadGateway):
        list(sse_data(upstream, Resp([b"data: [1, 2]\n\n"])))


def chat_chunk(delta=None, finish=None, **extra):
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"object": "chat.completion.chunk", "model": "m-up", "choices": choices, **extra}


def test_chat_reader_assembles_text_tool_call_arguments_and_usage():
    reader = ChatReader(upstream_at("http://x"), "resp_" + "b" * 32, "m")
    changes = [reader.feed(c) for c in [
        chat_chunk({"role": "assistant", "content": ""}),
        chat_chunk({"content": "Hel"}), chat_chunk({"content": "lo"}),
        chat_chunk({"tool_calls": [{"index": 0, "id": "call_1", "function": {
            "name": "f", "arguments": '{"a"'}}]}),
        chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
        chat_chunk({}, "tool_calls"),
        chat_chunk(usage={"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}),
        "[DONE]",
    ]]

    added, delta = "response.output_item.added", "response.output_text.delta"
    assert [[c["type"] for c in chunk] for chunk in changes] == [
        [], [added, "response.content_part.added", delta], [delta],
        [added, "response.function_call_arguments.delta"],
        ["response.function_call_arguments.delta"], [], [], []]
    assert "".join(c["delta"] for chunk in changes for c in chunk if c["type"] == delta) == "Hello"
    assert reader.done
    final = reader.final()
    # Each item keeps the id it was added with.
    assert [c["item"]["id"] for chunk in changes for c in chunk if c["type"] == added] == \
        [item["id"] for item in final["output"]]
    assert (final["status"], final["model"]) == ("completed", "m-up")
    assert [item["type"] for item in final["output"]] == ["message", "function_call"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["output"][1]["arguments"] == '{"a": 1}'
    assert final["usage"] == {"input_tokens": 4, "output_tokens": 6, "total_tokens": 10}


def test_chat_reader_length_is_incomplete_an_early_end_and_an_error_are_failures():
    reader = ChatReader(upstream_at("http://x"), "resp_1", "m")
    reader.feed(chat_chunk({"content": "x"}))
    with pytest.raises(BadGateway, match="before the answer was finished"):
        reader.final()
    reader.feed(chat_chunk({}, "length"))
    assert reader.final()["status"] == "incomplete"
    with pytest.raises(BadGateway, match="overloaded") as info:
        reader.feed({"error": {"message": f"overloaded, key {KEY}"}})
    assert KEY not in info.value.message  # the provider's key is scrubbed from its message


def responses_event(kind, **fields):
    return {"type": kind, **fields}


def test_responses_reader_assembles_deltas_and_takes_the_final_response():
    reader = ResponsesReader(upstream_at("http://x", "groq"), "resp_1", "m")
    for event in [
        responses_event("response.created", response={"status": "in_progress"}),
        responses_event("response.output_item.added", output_index=0,
                        item={"type": "message", "role": "assistant", "content": []}),
        responses_event("response.output_text.delta", output_index=0, content_index=0,
                        delta="Hi "),
        responses_event("response.output_text.delta", output_index=0, content_index=0,
                        delta="you"),
        responses_event("response.output_item.added", output_index=1,
                        item={"type": "function_call", "call_id": "c", "name": "f"}),
        responses_event("response.function_call_arguments.delta", output_index=1, delta="{}"),
    ]:
        reader.feed(event)

    so_far = reader.response("in_progress")
    assert so_far["output"][0]["content"][0]["text"] == "Hi you"
    assert so_far["output"][1]["arguments"] == "{}"
    with pytest.raises(BadGateway, match="before the response was finished"):
        reader.final()

    reader.feed(responses_event("response.incomplete", response={
        "model": "m-up", "output": [{"type": "message"}], "usage": {"input_tokens": 1}}))
    final = reader.final()
    assert (final["id"], final["status"], final["model"]) == ("resp_1", "incomplete", "m-up")
    assert final["usage"] == {"input_tokens": 1}


def test_responses_reader_error_event_is_a_failure_and_failed_keeps_its_error():
    reader = ResponsesReader(upstream_at("http://x", "groq"), "resp_1", "m")
    with pytest.raises(BadGateway, match="overloaded"):
        reader.feed(responses_event("error", code="server_error", message="overloaded"))

    reader.feed(responses_event("response.failed", response={
        "status": "failed", "error": {"code": "server_error", "message": "boom"}}))
    assert reader.final()["error"] == {"code": "server_error", "message": "boom"}


# A Generation against the fake provider, over real sockets.

def read_all(generation):
    """Read a generation to its end: every change it made, then its final Response."""
    changes = [change for chunk in generation.changes() for change in chunk]
    return changes, generation.final()


@pytest.mark.parametrize("provider", ["anthropic", "groq"])
def test_a_generation_streams_to_the_end(fake, provider):
    upstream = upstream_at(fake.base_url, provider)
    generation = PROVIDERS[provider].stream(upstream, {"model": "words-5-10",
                                                       "input": f"full-{provider}"})

    changes, final = read_all(generation)

    deltas = [c["delta"] for c in changes if c["type"] == "response.output_text.delta"]
    assert deltas == ["w0 ", "w1 ", "w2 ", "w3 ", "w4"]  # one change per delta, as each arrived
    assert final["status"] == "completed"
    assert final["output"][-1]["content"][0]["text"] == "w0 w1 w2 w3 w4"
    assert final["usage"]["output_tokens"] == 5
    assert len(fake.streams_for(f"full-{provider}")) == 1
    stream = fake.wait_for(f"full-{provider}", lambda s: s.finished)  # its flag lands after
    assert stream.body["stream"] is True
    if provider == "anthropic":  # translated, and asked for usage at the end
        assert stream.body["stream_options"] == {"include_usage": True}
        assert stream.body["messages"] == [{"role": "user", "content": "full-anthropic"}]
    else:
        assert "background" not in stream.body


@pytest.mark.parametrize("provider", ["anthropic", "groq"])
def test_close_from_another_thread_stops_the_upstream_stream(fake, provider):
    key = f"close-{provider}"
    generation = PROVIDERS[provider].stream(upstream_at(fake.base_url, provider),
                                            {"model": "words-500-20", "input": key})
    seen = []
    reading = threading.Thread(target=lambda: seen.extend(generation.changes()))
    reading.start()
    fake.wait_for(key, lambda s: s.sent >= 3)

    closed_at = time.monotonic()
    generation.close()
    reading.join(timeout=2)

    assert not reading.is_alive()  # the blocked read returned
    assert seen and generation.closed  # it was stopped before its end
    stream = fake.wait_for(key, lambda s: s.client_left, seconds=2)
    assert stream.gone_at - closed_at < 1 and not stream.finished


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("provider", ["anthropic", "groq"])
def test_close_stops_the_upstream_whatever_the_framing_and_transport(routes, provider, route):
    """The stream ends by a chunk, by its length or by the connection closing, over HTTP,
    TLS, a proxy or a tunnel: closing it from another thread reaches the provider."""
    key = f"close-{provider}-{route}"
    generation = PROVIDERS[provider].stream(upstream_on(routes, route, provider),
                                            {"model": "words-500-20", "input": key})
    reading = threading.Thread(target=lambda: list(generation.changes()))
    reading.start()
    fake = routes.fake(route)
    fake.wait_for(key, lambda s: s.sent >= 3)

    closed_at = time.monotonic()
    generation.close()
    reading.join(timeout=2)

    assert not reading.is_alive()
    stream = fake.wait_for(key, lambda s: s.client_left, seconds=2)
    assert stream.gone_at - closed_at < 1 and not stream.finished


@pytest.mark.parametrize("route", ROUTES)
def test_a_stopped_connection_is_never_reused_and_a_finished_one_is_where_it_can_be(routes,
                                                                                  route):
    upstream, fake = upstream_on(routes, route), routes.fake(route)

    def run(key, model, stop_after=None):
        generation = PROVIDERS["anthropic"].stream(upstream, {"model": model, "input": key})
        if stop_after is None:
            assert read_all(generation)[1]["status"] == "completed"
        else:
            for seen, _ in enumerate(generation.changes()):
                if seen == stop_after:
                    generation.close()
        return fake.streams_for(key)[-1]

    first = run(f"reuse-a-{route}", "words-3-0")
    second = run(f"reuse-b-{route}", "words-3-0")
    stopped = run(f"reuse-c-{route}", "words-500-5", stop_after=3)
    after = run(f"reuse-d-{route}", "words-3-0")

    # A stream that ended by itself leaves its connection for the next call, unless the
    # provider ends streams by closing it (or a plain proxy answers Connection: close).
    reusable = not route.startswith("close") and not route.endswith("-proxy")
    assert (second.peer == first.peer) == reusable
    assert after.peer != stopped.peer  # the stopped one was never handed out again
    assert fake.wait_for(f"reuse-c-{route}", lambda s: s.client_left, seconds=2)


@pytest.mark.parametrize("route", ["close-tls", "close-connect", "chunked-tls"])
def test_new_tls_connections_trust_the_bundle_without_reading_it_again(routes, route,
                                                                       monkeypatch):
    """Each stream that ends by closing takes a new connection (and a TLS handshake); the
    CA bundle was read once, when the provider was connected, not for each of them."""
    upstream, reads = upstream_on(routes, route), []
    real = ssl.SSLContext.load_verify_locations
    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations",
                        lambda self, *a, **kw: reads.append(a or kw) or real(self, *a, **kw))

    for i in range(3):
        generation = PROVIDERS["anthropic"].stream(
            upstream, {"model": "words-2-0", "input": f"tls-once-{route}-{i}"})
        assert read_all(generation)[1]["status"] == "completed"

    assert reads == []


@pytest.fixture
def other_ca_bundle(tmp_path):
    """A CA bundle that trusts none of the fakes: a CA of its own, which signed nothing."""
    bundle = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(bundle))
    return bundle


@pytest.mark.parametrize("route", ["chunked-tls", "chunked-connect"])
def test_a_provider_whose_certificate_no_trusted_ca_signed_is_refused(routes, route,
                                                                      other_ca_bundle):
    url = routes.base_url(route)
    upstream = connect("anthropic", url, KEY, 5, 4, proxies=proxies_for(routes.env(), url),
                       verify=str(other_ca_bundle))
    generation = PROVIDERS["anthropic"].stream(upstream, {"model": "words-2-0", "input": "x"})

    with pytest.raises(BadGateway):
        read_all(generation)
    assert routes.fake(route).streams_for("x") == []  # nothing reached the provider


@pytest.mark.parametrize("trusted", [True, False])
def test_through_an_https_proxy_a_stream_is_tls_inside_tls_and_a_close_still_stops_it(
        routes, other_ca_bundle, trusted):
    """The proxy's certificate is checked with the same bundle as the provider's."""
    bundle = routes.ca_bundle if trusted else other_ca_bundle
    fake, key = routes.fake("chunked-connect"), f"https-proxy-{trusted}"
    with FakeProxy(tls=routes.server_tls) as proxy:
        upstream = connect("anthropic", routes.base_url("chunked-connect"), KEY, 5, 4,
                           proxies={"https": proxy.url}, verify=str(bundle))
        generation = PROVIDERS["anthropic"].stream(upstream, {"model": "words-500-20",
                                                              "input": key})
        if not trusted:
            with pytest.raises(BadGateway):
                read_all(generation)
            assert fake.streams_for(key) == [] and proxy.seen == []
            return
        reading = threading.Thread(target=lambda: list(generation.changes()))
        reading.start()
        fake.wait_for(key, lambda s: s.sent >= 3)
        closed_at = time.monotonic()
        generation.close()
        reading.join(timeout=2)

        assert not reading.is_alive()
        assert proxy.seen == [("CONNECT", routes.base_url("chunked-connect").split("/")[2])]
        stream = fake.wait_for(key, lambda s: s.client_left, seconds=2)
        assert stream.gone_at - closed_at < 1 and not stream.finished


@pytest.mark.parametrize("provider", ["anthropic", "groq"])
@pytest.mark.parametrize("kind", ["fail", "cut"])
def test_a_stream_that_fails_or_breaks_off_raises(fake, provider, kind):
    generation = PROVIDERS[provider].stream(upstream_at(fake.base_url, provider),
                                            {"model": f"{kind}-2-0", "input": f"{kind}-x"})

    with pytest.raises(BadGateway):
        read_all(generation)


@pytest.mark.parametrize("status,error", [(429, RateLimited), (400, Rejected), (500, BadGateway)])
def test_a_refused_stream_raises_before_any_output(upstream, status, error):
    upstream.post("http://provider.test/v1/chat/completions", status=status,
                  json={"error": {"message": "no"}})
    generation = PROVIDERS["anthropic"].stream(upstream_at("http://provider.test/v1"),
                                               {"model": "m", "input": "x"})

    with pytest.raises(error):
        next(generation.changes())
    assert upstream.calls[-1].request.headers["Authorization"] == f"Bearer {KEY}"


def chat_delta(i):
    return chat_chunk({"content": f"w{i} "})


def responses_delta(i):
    return responses_event("response.output_text.delta", output_index=0, content_index=0,
                           item_id="msg_1", delta=f"w{i} ")


def allocated_by_one(reader, writer, chunk):
    """The most memory taking in one chunk, and numbering what it changed, held at once."""
    tracemalloc.start()
    try:
        list(writer.apply(reader.feed(chunk)))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind,reader_class,delta", [
    ("chat", ChatReader, chat_delta), ("responses", ResponsesReader, responses_delta)])
def test_a_delta_costs_no_more_at_the_end_of_a_long_stream(kind, reader_class, delta):
    """Nothing done per delta grows with the text so far (no rejoining, no copying): the
    64,000th delta takes no more memory than the tenth, where the text is 350 KB."""
    reader, writer = reader_class(upstream_at("http://x"), "resp_1", "m"), EventWriter()
    if kind == "responses":
        list(writer.apply(reader.feed(responses_event(
            "response.output_item.added", output_index=0,
            item={"type": "message", "id": "msg_1", "role": "assistant", "content": []}))))
    for i in range(10):
        list(writer.apply(reader.feed(delta(i))))
    early = allocated_by_one(reader, writer, delta(10))
    for i in range(11, 64_000):
        list(writer.apply(reader.feed(delta(i))))

    late = allocated_by_one(reader, writer, delta(64_000))

    assert late < early + 4096, (early, late)
    text = reader.response("in_progress")["output"][0]["content"][0]["text"]
    assert len(text) > 350_000 and text.endswith("w63999 w64000 ")
