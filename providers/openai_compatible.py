"""Providers that speak OpenAI's Responses API upstream: one helper serves them all."""

from providers.upstream import path_segment, request_json


def cancel(upstream, response_id):
    """Cancel a background response: POST {base_url}/responses/{id}/cancel."""
    return request_json(upstream, "POST", f"responses/{path_segment(response_id)}/cancel")
