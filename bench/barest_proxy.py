"""A yardstick for the benchmark, never part of the service: the barest Flask proxy of a
cancel, and the barest relay of a stream (the provider's bytes passed on as they come,
POST /v1/chat/completions and POST /v1/responses to STREAM_BASE_URL). One pooled
requests.Session, a bearer-key string compare, the provider's body returned as it is. No store, no schemas, no metrics, no access log, no retries, no id
checks, no error envelope. bench/run.py serves it with the gateway's gunicorn settings.
"""

import os

import requests
from flask import Flask, Response, request

UPSTREAM = os.environ["OPENAI_BASE_URL"]
EXPECTED = f"Bearer {os.environ['GATEWAY_API_KEYS']}"

session = requests.Session()
session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=64))
app = Flask(__name__)


@app.post("/v1/responses/<response_id>/cancel")
def cancel(response_id):
    if request.headers.get("Authorization") != EXPECTED:
        return {"error": {"type": "authentication_error", "message": "bad key"}}, 401
    upstream = session.post(f"{UPSTREAM}/responses/{response_id}/cancel", timeout=(5, 20),
                            headers={"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"})
    return Response(upstream.content, upstream.status_code, content_type="application/json")


STREAM_UPSTREAM = os.environ.get("STREAM_BASE_URL", UPSTREAM)


@app.post("/v1/chat/completions")
@app.post("/v1/responses")
def relay():
    if request.headers.get("Authorization") != EXPECTED:
        return {"error": {"type": "authentication_error", "message": "bad key"}}, 401
    path = request.path.removeprefix("/v1/")
    upstream = session.post(f"{STREAM_UPSTREAM}/{path}", data=request.get_data(), stream=True,
                            timeout=(5, 20), headers={
                                "Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}",
                                "Content-Type": "application/json"})
    return Response(upstream.iter_content(None), upstream.status_code,
                    content_type=upstream.headers.get("Content-Type"))
