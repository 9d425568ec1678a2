"""A small OpenAI-like provider on 127.0.0.1 for end-to-end tests; it records what it gets."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MISSING = "resp_missing"  # the one id this provider does not hold


class FakeProvider(ThreadingHTTPServer):
    """Answers POST /v1/responses/{id}/cancel like OpenAI; keeps every request it saw."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received = []  # (method, path, headers) in arrival order
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.received.append((self.command, self.path, dict(self.headers)))
        parts = self.path.split("/")  # ['', 'v1', 'responses', id, 'cancel']
        if len(parts) != 5 or parts[:3] != ["", "v1", "responses"] or parts[4] != "cancel":
            return self._reply(404, {"error": {"message": "no such route"}})
        if parts[3] == MISSING:
            return self._reply(404, {"error": {
                "message": f"No response found with id '{MISSING}'.",
                "type": "invalid_request_error", "param": None, "code": None,
            }})
        self._reply(200, {
            "id": parts[3], "object": "response", "created_at": 1741476542,
            "status": "cancelled", "background": True, "model": "gpt-4o-mini",
            "output": [], "error": None, "usage": None,
        })

    def _reply(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass  # keep test output quiet
