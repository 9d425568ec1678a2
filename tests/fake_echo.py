"""A provider on 127.0.0.1 whose model echoes the last thing the user said, in both APIs, so a
test can tell from what it received which turns a call carried.

POST /v1/chat/completions answers "heard: <last user text>" (one completion, or a
stream with stream: true, paced like a model at work when the text asks for something
long); POST /v1/responses answers the same as a completed
Response (or, with background: true, a queued one that runs until cancelled), kept
for GET /v1/responses/{id} and .../input_items, POST .../cancel and DELETE;
POST /v1/responses/input_tokens counts
(a word count of the input, so a longer input counts more) and POST
/v1/responses/compact answers a compaction. Every request body is recorded, in order.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving import ServedInBackground


class EchoProvider(ServedInBackground, ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received = []  # (path, body) of each request, in order
        self.kept = {}
        self.inputs = {}  # what each kept response was given
        self.lock = threading.Lock()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def bodies(self, path):
        """The bodies it received at `path`, in order."""
        return [body for at, body in self.received if at == path]



def texts(value):
    """Every text in a Responses input or a Chat message list, in order."""
    if isinstance(value, str):
        return [value]
    found = []
    for item in value if isinstance(value, list) else []:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            found.append(content)
        elif isinstance(content, list):
            found += [p.get("text") for p in content if isinstance(p, dict) and p.get("text")]
    return found


def heard(body):
    """What the model answers: the last text it was given."""
    said = texts(body.get("messages") if "messages" in body else body.get("input"))
    return f"heard: {said[-1] if said else ''}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw) if raw else {}
        with self.server.lock:
            self.server.received.append((self.path, body))
            number = len(self.server.received)
        if self.path == "/v1/chat/completions":
            return self._chat(body)
        if self.path == "/v1/responses":
            return self._response(body, f"resp_echo{number}")
        if self.path.endswith("/cancel"):
            response = self.server.kept.get(self.path.split("/")[3])
            if response is None:
                return self._json(404, {"error": {"message": "No such response"}})
            response["status"] = "cancelled"
            return self._json(200, response)
        if self.path == "/v1/responses/input_tokens":
            words = sum(len(t.split()) for t in texts(body.get("input")))
            return self._json(200, {"object": "response.input_tokens", "input_tokens": words})
        if self.path == "/v1/responses/compact":
            return self._json(200, {
                "id": f"cmp_{number}", "object": "response.compaction",
                "created_at": int(time.time()),
                "output": [{"type": "compaction", "id": f"cmp_item{number}",
                            "encrypted_content": "opaque"}],
                "usage": {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6}})
        self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_GET(self):
        parts = self.path.split("?")[0].split("/")  # ['', 'v1', 'responses', id, ...]
        response = self.server.kept.get(parts[3]) if len(parts) > 3 else None
        if response is None:
            return self._json(404, {"error": {"message": "No such response",
                                              "type": "invalid_request_error"}})
        if parts[4:] == ["input_items"]:
            given = self.server.inputs.get(parts[3])
            items = [{"id": "msg_in", "type": "message", "role": "user",
                      "content": [{"type": "input_text", "text": t}]} for t in texts(given)]
            return self._json(200, {"object": "list", "data": items, "has_more": False,
                                    "first_id": "msg_in", "last_id": "msg_in"})
        self._json(200, response)

    def do_DELETE(self):
        response_id = self.path.split("/")[3]
        if self.server.kept.pop(response_id, None) is None:
            return self._json(404, {"error": {"message": "No such response"}})
        self._json(200, {"id": response_id, "object": "response", "deleted": True})

    def _chat(self, body):
        text = heard(body)
        if not body.get("stream"):
            return self._json(200, {
                "id": "chatcmpl-echo", "object": "chat.completion", "created": 1,
                "model": body["model"], "choices": [{
                    "index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": word},
                                "finish_reason": None}]}
                  for word in _pieces(text)]
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        pause = 0.25 if "long" in text else 0  # so a cancel sent at once finds it running
        self._sse([f"data: {json.dumps({'model': body['model'], **c})}\n\n" for c in chunks]
                  + ["data: [DONE]\n\n"], pause)

    def _response(self, body, response_id):
        text = heard(body)
        response = {
            "id": response_id, "object": "response", "created_at": int(time.time()),
            "status": "completed", "model": body.get("model"),
            "output": [{"type": "message", "id": f"msg_{response_id}", "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}}
        if body.get("background"):  # it runs until cancelled
            response = {**response, "status": "queued", "output": [], "background": True}
        if body.get("store") is not False:
            self.server.kept[response_id] = response
            self.server.inputs[response_id] = body.get("input")
        if not body.get("stream"):
            return self._json(200, response)
        started = {**response, "status": "in_progress", "output": []}
        item = response["output"][0]
        part, where = item["content"][0], {"item_id": item["id"], "output_index": 0}
        events = [("response.created", {"response": started}),
                  ("response.in_progress", {"response": started}),
                  ("response.output_item.added", {"output_index": 0, "item": {
                      **item, "status": "in_progress", "content": []}}),
                  ("response.content_part.added", {**where, "content_index": 0,
                                                   "part": {**part, "text": ""}}),
                  *[("response.output_text.delta", {**where, "content_index": 0,
                                                    "delta": piece, "logprobs": []})
                    for piece in _pieces(text)],
                  ("response.output_text.done", {**where, "content_index": 0, "text": text,
                                                 "logprobs": []}),
                  ("response.content_part.done", {**where, "content_index": 0, "part": part}),
                  ("response.output_item.done", {"output_index": 0, "item": item}),
                  ("response.completed", {"response": response})]
        self._sse([f"event: {kind}\ndata: "
                   f"{json.dumps({'type': kind, 'sequence_number': i, **data})}\n\n"
                   for i, (kind, data) in enumerate(events)])

    def _sse(self, events, pause=0):
        """A stream with no length: chunked, as most providers send one."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            data = event.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            time.sleep(pause)
        self.wfile.write(b"0\r\n\r\n")

    def _json(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _pieces(text):
    words = text.split(" ")
    return [word if i == 0 else f" {word}" for i, word in enumerate(words)]
