"""Providers that speak OpenAI's Responses API upstream: one helper serves them all."""

from providers.streaming import Generation, ResponsesReader
from providers.translate import new_response_id
from providers.upstream import path_segment, request_json


def create(upstream, body):
    """Create a response: POST {base_url}/responses with the client's body as is."""
    return request_json(upstream, "POST", "responses", body=body, replay_safe=False)


def retrieve(upstream, response_id):
    """Fetch a response's current state: GET {base_url}/responses/{id}."""
    return request_json(upstream, "GET", f"responses/{path_segment(response_id)}")


def cancel(upstream, response_id):
    """Cancel a background response: POST {base_url}/responses/{id}/cancel."""
    return request_json(upstream, "POST", f"responses/{path_segment(response_id)}/cancel")


def delete(upstream, response_id):
    """Delete a stored response: DELETE {base_url}/responses/{id}."""
    return request_json(upstream, "DELETE", f"responses/{path_segment(response_id)}")


def input_items(upstream, response_id, query):
    """List a response's input items: GET {base_url}/responses/{id}/input_items?..."""
    return request_json(upstream, "GET", f"responses/{path_segment(response_id)}/input_items",
                        params=query)


def input_tokens(upstream, body):
    """Count a create body's input tokens: POST {base_url}/responses/input_tokens (it makes
    nothing, so it may be sent again)."""
    return request_json(upstream, "POST", "responses/input_tokens", body=body)


def compact(upstream, body):
    """Compact a conversation into fewer, opaque items: POST {base_url}/responses/compact
    (a model call: never sent twice)."""
    return request_json(upstream, "POST", "responses/compact", body=body, replay_safe=False)


def resume(upstream, response_id, after):
    """A background response's stream again, its events after sequence number `after`
    (all of them for -1): GET {base_url}/responses/{id}?stream=true&starting_after=N,
    opened (a refusal raises)."""
    query = "stream=true" + (f"&starting_after={after}" if after >= 0 else "")
    reader = ResponsesReader(upstream, response_id, None)
    path = f"responses/{path_segment(response_id)}?{query}"
    return Generation(upstream, path, None, reader, method="GET").open()


def stream(upstream, body):
    """A streamed generation: POST {base_url}/responses with the body and stream: true."""
    reader = ResponsesReader(upstream, new_response_id(), body.get("model"))
    return Generation(upstream, "responses", {**body, "stream": True}, reader)
