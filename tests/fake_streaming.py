"""A provider on 127.0.0.1 that streams generations slowly, in both formats, and records
whether each stream was read to its end or its client went away (and when).

POST /v1/chat/completions streams Chat Completions chunks (or answers one
completion without stream: true); POST /v1/responses with stream: true streams
Responses API events, each stream under an id of its own, and keeps the
response as OpenAI does (unless store: false): GET /v1/responses/{id} answers
it as it stands (in progress while it streams), POST .../cancel cancels it and
DELETE deletes it. The model name says what to do:

    words-<n>-<ms>   n words, one delta every ms milliseconds, then finish
    fail-<n>-<ms>    n words, then an error event
    cut-<n>-<ms>     n words, then the connection closes without an ending
    length-<n>-<ms>  n words, then finish_reason "length" (incomplete)
    tool-<n>-<ms>    a tool call whose arguments arrive in n pieces
    refuse-<n>-<ms>  a 400 at once, before any stream

Each stream is recorded under its input (a string), so a test can name its own.

`framing` says how a stream's body is delimited, as real servers differ:

    chunked   Transfer-Encoding: chunked on a kept-alive connection (the default)
    close     no length at all: the body ends when the server closes the connection
              (Connection: close, as HTTP/1.0-style servers and some proxies answer)
    length    a Content-Length computed up front, on a kept-alive connection

`tls` (an ssl.SSLContext for the server side) serves it over HTTPS.
"""

import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving import ServedInBackground

FRAMINGS = ("chunked", "close", "length")


class Stream:
    """What the fake saw of one streamed generation."""

    def __init__(self, path, key, body, response_id=None):
        self.path, self.key, self.body, self.response_id = path, key, body, response_id
        self.started_at = time.monotonic()
        self.sent = 0  # deltas written
        self.finished = False  # the whole stream was written
        self.gone_at = None  # when a write found the client gone
        self.peer = None  # (host, port) of the connection it came on: the same port, reused

    @property
    def client_left(self):
        return self.gone_at is not None


class FakeStreamingProvider(ServedInBackground, ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """Stay quiet when a client hangs up (the tests do so on purpose); print the rest."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            super().handle_error(request, client_address)

    def __init__(self, framing="chunked", tls=None):
        assert framing in FRAMINGS, framing
        super().__init__(("127.0.0.1", 0), _Handler)
        self.framing, self.tls = framing, tls
        self.streams = []
        self.kept = {}  # response id -> the Response as it stands, for those it keeps
        self.calls = []  # (method, path) of every call that is not a stream
        self.lock = threading.Lock()

    def get_request(self):
        """Accept a connection; over TLS, its handshake happens on the handler's thread."""
        sock, address = super().get_request()
        if self.tls:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def url(self, host="127.0.0.1"):
        """The base URL, with `host` for the name a client uses (a proxy may need another)."""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.server_address[1]}/v1"

    @property
    def base_url(self):
        return self.url()

    def streams_for(self, key):
        with self.lock:
            return [s for s in self.streams if s.key == key]

    def wait_for(self, key, condition, seconds=10):
        """The stream for `key` once `condition(stream)` holds; fails after `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = self.streams_for(key)
            if found and condition(found[-1]):
                return found[-1]
            time.sleep(0.02)
        raise AssertionError(f"stream {key!r}: condition not met in {seconds}s: {found}")



def plan(model):
    """(kind, n, seconds between deltas) from a model name like words-5-20."""
    kind, n, ms = (model.split("/")[-1].split("-") + ["3", "0"])[:3]
    return kind, int(n), int(ms) / 1000


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, with no 40 ms ACK wait

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/v1/responses/"):
            return self._kept()
        body = json.loads(raw)
        kind, n, pause = plan(body.get("model", ""))
        if kind == "refuse":
            return self._send_json(400, {"error": {"message": "this model is refused",
                                                   "type": "invalid_request_error"}})
        if self.path == "/v1/chat/completions" and not body.get("stream"):
            return self._completion(body, n)
        if self.path not in ("/v1/chat/completions", "/v1/responses") or not body.get("stream"):
            return self._send_json(404, {"error": {"message": f"no route {self.path}"}})
        key = body["input"] if "input" in body else body["messages"][-1]["content"]
        responses_api = self.path == "/v1/responses"
        with self.server.lock:
            response_id = f"resp_up{len(self.server.streams)}" if responses_api else None
            stream = Stream(self.path, key, body, response_id)
            self.server.streams.append(stream)
        stream.peer = self.client_address
        keep = self.server.kept if responses_api and body.get("store") is not False else {}
        events = chat_events(kind, n) if not responses_api else \
            responses_events(kind, n, response_id, keep)
        framing = self.server.framing
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        elif framing == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        else:  # the length of every event it will send, counted before the first
            events = list(events)
            length = sum(len(e) for e, _ in events if e is not None)
            self.send_header("Content-Length", str(length))
        self.end_headers()
        try:
            for event, is_delta in events:
                if event is None:  # cut: close without an ending
                    self.close_connection = True
                    return
                if is_delta:
                    time.sleep(pause)
                self._write(event)
                stream.sent += is_delta
            if framing == "chunked":
                self._write(b"")
            stream.finished = True
        except (ConnectionError, ssl.SSLError):
            stream.gone_at = time.monotonic()
            self.close_connection = True

    def do_GET(self):
        self._kept()

    def do_DELETE(self):
        self._kept()

    def _kept(self):
        """GET, cancel or DELETE a response it keeps, as OpenAI answers them."""
        parts = self.path.split("?")[0].split("/")  # ['', 'v1', 'responses', id, ...]
        self.server.calls.append((self.command, self.path))
        response_id = parts[3] if len(parts) > 3 else None
        with self.server.lock:
            response = self.server.kept.get(response_id)
            if response is None or parts[:3] != ["", "v1", "responses"]:
                return self._send_json(404, {"error": {
                    "message": f"No response found with id '{response_id}'.",
                    "type": "invalid_request_error", "code": None, "param": None}})
            if self.command == "DELETE":
                del self.server.kept[response_id]
                return self._send_json(200, {"id": response_id, "object": "response",
                                             "deleted": True})
            if self.command == "POST":
                response["status"] = "cancelled"
            self._send_json(200, response)

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.do_handshake()
        super().setup()

    def _write(self, data):
        """Write part of the body, framed as the server frames it."""
        if self.server.framing == "chunked":
            data = f"{len(data):x}\r\n".encode() + data + b"\r\n"
        self.wfile.write(data)
        self.wfile.flush()

    def _completion(self, body, n):
        text = " ".join(f"w{i}" for i in range(n))
        self._send_json(200, {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1741476542,
            "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                                                 "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 2, "completion_tokens": n, "total_tokens": n + 2}})

    def _send_json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def sse(data, event=None):
    head = f"event: {event}\n" if event else ""
    return (head + f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n").encode()


def chat_events(kind, n):
    """(event bytes, whether it is a delta) for a Chat Completions stream."""
    def chunk(delta, finish=None):
        return sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "fake-chat",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""}), False
    if kind == "tool":
        yield chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                     "function": {"name": "lookup", "arguments": ""}}]}), False
        for i in range(n):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": f"{i}"}}]}), True
        yield chunk({}, "tool_calls"), False
    else:
        for i in range(n):
            yield chunk({"content": f"w{i} " if i < n - 1 else f"w{i}"}), True
        if kind == "fail":
            yield sse({"error": {"message": "the model is overloaded", "code": "overloaded"}}), False
            return
        if kind == "cut":
            yield None, False
            return
        yield chunk({}, "length" if kind == "length" else "stop"), False
    yield sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
               "usage": {"prompt_tokens": 2, "completion_tokens": n, "total_tokens": n + 2}}), False
    yield sse("[DONE]"), False


def responses_events(kind, n, response_id="resp_upstream", keep=None):
    """(event bytes, whether it is a delta) for a Responses API stream; `keep`, a dict,
    holds the Response as it stands under its id while it streams (the fake keeps it)."""
    base = {"id": response_id, "object": "response", "model": "fake-responses"}
    keep = {} if keep is None else keep
    seq = iter(range(10**6))

    def event(kind_, **fields):
        return sse({"type": kind_, "sequence_number": next(seq), **fields}, kind_)

    keep[response_id] = {**base, "status": "in_progress", "output": []}
    yield event("response.created", response={**base, "status": "in_progress"}), False
    item = {"type": "message", "id": f"msg_{response_id}", "role": "assistant",
            "status": "in_progress", "content": []}
    yield event("response.output_item.added", output_index=0, item=item), False
    yield event("response.content_part.added", output_index=0, content_index=0,
                item_id=item["id"], part={"type": "output_text", "text": ""}), False
    words = []
    for i in range(n):
        words.append(f"w{i}")
        yield event("response.output_text.delta", output_index=0, content_index=0,
                    item_id=item["id"], delta=f"w{i} " if i < n - 1 else f"w{i}"), True
    if kind == "fail":
        keep[response_id] = {**base, "status": "failed", "output": []}
        yield event("error", code="overloaded", message="the model is overloaded"), False
        return
    if kind == "cut":
        yield None, False
        return
    done = {**item, "status": "completed",
            "content": [{"type": "output_text", "text": " ".join(words), "annotations": []}]}
    yield event("response.output_item.done", output_index=0, item=done), False
    final = {**base, "status": "completed", "output": [done],
             "usage": {"input_tokens": 2, "output_tokens": n, "total_tokens": n + 2}}
    if keep.get(response_id, {}).get("status") == "in_progress":
        keep[response_id] = final
    yield event("response.completed", response=final), False
