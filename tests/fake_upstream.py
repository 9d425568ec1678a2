"""A small OpenAI-like provider on 127.0.0.1 for tests through real sockets.

It serves the Responses lifecycle: POST /v1/responses creates a response
(queued if background, else completed), GET /v1/responses/{id} reports it,
POST /v1/responses/{id}/cancel cancels it, DELETE /v1/responses/{id} deletes it
(after which it is a 404). It holds every id but MISSING: one
it did not create counts as in progress. It records every request it sees.
An id's first word (before a '-') can ask for a fault instead, so one server
plays every misbehaving provider: `s503ra-<n>` answers 503 with Retry-After: 1,
`hang-<n>` never answers, ...
"""

import json
import sys
import threading
import time
import uuid
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving import ServedInBackground

MISSING = "resp_missing"  # the one id this provider does not hold
BIG = 50 * 1024 * 1024

Received = namedtuple("Received", "method path headers body")


class FakeProvider(ServedInBackground, ThreadingHTTPServer):
    """The fake provider; `received` holds each Received request in arrival order."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        """Stay quiet when a client hangs up (the tests do so on purpose); print the rest."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def __init__(self, prefix="resp_fake", idle_close=None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.prefix = prefix  # of the ids it creates, to tell two fakes apart
        # Seconds after which it closes an idle kept-alive connection, as servers do; a
        # request that comes on one idle that long is read and hung up on, unanswered, as
        # when it arrives just as the server closes (the race a client must not run).
        self.idle_close = idle_close
        self.hung_up = []  # (method, path) of the requests it hung up on so
        self.received = []
        self.statuses = {}  # id -> status, for the responses it created or cancelled
        self.stopping = threading.Event()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def calls_for(self, response_id, method=None):
        """How many requests (of one method, if given) reached this provider for one id."""
        return sum(1 for r in self.received
                   if r.path.split("/")[3:4] == [response_id] and method in (None, r.method))

    def __exit__(self, *exc):
        self.stopping.set()  # a hanging answer ends first, so the shutdown does not wait on it
        super().__exit__(*exc)


def response(response_id, status, model="gpt-4o-mini"):
    return {
        "id": response_id, "object": "response", "created_at": 1741476542,
        "status": status, "background": True, "model": model,
        "output": [], "error": None, "usage": None,
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, with no 40 ms ACK wait
    idle_since = None  # when this connection's last answer went out

    def handle_one_request(self):
        super().handle_one_request()
        self.idle_since = time.monotonic()

    def parse_request(self):
        """Take the request; on a connection idle past idle_close, read it and hang up."""
        if not super().parse_request():
            return False
        limit = self.server.idle_close
        if limit is not None and self.idle_since is not None and \
                time.monotonic() - self.idle_since >= limit:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.server.hung_up.append((self.command, self.path))
            self.close_connection = True
            return False
        return True

    def do_POST(self):
        self._serve()

    def do_GET(self):
        self._serve()

    def do_DELETE(self):
        self._serve()

    def _serve(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw) if raw else None
        self.server.received.append(Received(self.command, self.path, dict(self.headers), body))
        parts = self.path.split("/")  # ['', 'v1', 'responses', id, 'cancel']
        route = (self.command, len(parts), parts[4] if len(parts) == 5 else None)
        if parts[:3] != ["", "v1", "responses"] or route not in (
                ("POST", 3, None), ("GET", 4, None), ("POST", 5, "cancel"), ("DELETE", 4, None)):
            return self._json(404, {"error": {"message": "no such route"}})
        if len(parts) == 3:
            return self._create(body)
        response_id = parts[3]
        fault = FAULTS.get(response_id.split("-", 1)[0])
        try:
            if fault:
                return fault(self)
            if response_id == MISSING or self.server.statuses.get(response_id) == "deleted":
                return self._json(404, {"error": {
                    "message": f"No response found with id '{MISSING}'.",
                    "type": "invalid_request_error", "param": None, "code": None,
                }})
            if self.command == "DELETE":
                self.server.statuses[response_id] = "deleted"
                return self._json(200, {"id": response_id, "object": "response",
                                        "deleted": True})
            if self.command == "POST":
                self.server.statuses[response_id] = "cancelled"
            status = self.server.statuses.get(response_id, "in_progress")
            self._json(200, response(response_id, status))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway hung up on a body it did not want: that is the point

    def _create(self, body):
        response_id = f"{self.server.prefix}_{uuid.uuid4().hex}"
        status = "queued" if body.get("background") else "completed"
        self.server.statuses[response_id] = status
        self._json(200, response(response_id, status, model=body.get("model")))

    def _json(self, status, payload, headers=()):
        self._send(status, json.dumps(payload).encode(), headers)

    def _send(self, status, body, headers=(), length=None):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _hang(self):
        self.server.stopping.wait(60)
        self.close_connection = True

    def _close_mid_body(self):
        self._send(200, b'{"id": "resp_', length=1000)
        self.close_connection = True

    def _big(self, declared):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if declared:
            self.send_header("Content-Length", str(BIG))
        self.end_headers()
        chunk = b" " * (1024 * 1024)
        for _ in range(BIG // len(chunk)):
            self.wfile.write(chunk)
        self.close_connection = True

    def log_message(self, *args):
        pass  # keep test output quiet


def _error(status, retry_after=None):
    headers = [("Retry-After", retry_after)] if retry_after else []
    body = {"error": {"message": f"upstream says {status}", "type": "server_error"}}
    return lambda handler: handler._json(status, body, headers)


FAULTS = {
    "hang": _Handler._hang,
    "midbody": _Handler._close_mid_body,
    "badjson": lambda h: h._send(200, b"{not json"),
    "array": lambda h: h._send(200, b"[1, 2, 3]"),
    "big": lambda h: h._big(declared=True),
    "bigchunked": lambda h: h._big(declared=False),
    "s401": lambda h: h._json(401, {"error": {  # OpenAI echoes (part of) a bad key back
        "message": f"Incorrect API key provided: {h.headers.get('Authorization')}"}}),
    "s400key": lambda h: h._json(400, {"error": {
        "message": f"Cannot use {h.headers.get('Authorization')} here"}}),
    "s429ra": _error(429, retry_after="1"),
    "s500": _error(500),
    "s502": _error(502),
    "s503": _error(503),
    "s503ra": _error(503, retry_after="1"),
}
