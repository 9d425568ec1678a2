"""A webhook endpoint on 127.0.0.1 that verifies each delivery with the official SDK, as a
user's would, and can misbehave: answer some attempts with an error, hang, or not listen
at all until it is started.

`answers` is a list of what to do with the next attempts, in order, then 200 for the
rest: a status code (int), or "hang" (answer nothing for `hang` seconds). Every attempt
is recorded (its headers, body, and whether the SDK's unwrap() accepted it).
"""

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai

from serving import ServedInBackground

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Attempt:
    def __init__(self, headers, body, event, error):
        self.headers, self.body, self.event, self.error = headers, body, event, error
        self.answered = None  # the status it was answered, None if none

    @property
    def verified(self):
        return self.error is None


class Receiver(ServedInBackground, ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port=0, answers=(), hang=30.0, secret=SECRET):
        super().__init__(("127.0.0.1", port), _Handler)
        self.answers, self.hang, self.secret = list(answers), hang, secret
        self.attempts = []
        self.lock = threading.Lock()
        self.sdk = openai.OpenAI(api_key="sk-unused", base_url="http://127.0.0.1:9/v1")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/hooks"

    def delivered(self):
        """The events verified and answered 2xx, in order of arrival."""
        return [a.event for a in self.attempts if a.verified and a.answered == 200]

    def wait_for(self, count, seconds=30):
        """The first `count` delivered events; fails after `seconds`."""
        deadline = time.monotonic() + seconds
        while len(self.delivered()) < count:
            assert time.monotonic() < deadline, (
                f"{len(self.delivered())} of {count} events in {seconds}s: {self.attempts}")
            time.sleep(0.05)
        return self.delivered()



class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        server = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            event, error = server.sdk.webhooks.unwrap(body, headers, secret=server.secret), None
        except Exception as exc:  # noqa: BLE001 (recorded: the test says what it expects)
            event, error = None, repr(exc)
        attempt = Attempt(headers, body, event, error)
        with server.lock:
            server.attempts.append(attempt)
            answer = server.answers.pop(0) if server.answers else 200
        if answer == "hang":
            time.sleep(server.hang)
            self.close_connection = True
            return
        attempt.answered = answer
        data = json.dumps({"ok": answer == 200}).encode()
        self.send_response(answer)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if 300 <= answer < 400:
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass
