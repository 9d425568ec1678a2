"""Providers that speak only Chat Completions: a create is translated there and back."""

from providers.streaming import ChatReader, Generation
from providers.translate import chat_request, chat_response, new_response_id, tool_names
from providers.upstream import request_json


def create(upstream, body):
    """Create a response: POST {base_url}/chat/completions, translated both ways."""
    chat = chat_request(body, upstream.name)
    completion = request_json(upstream, "POST", "chat/completions", body=chat, replay_safe=False)
    return chat_response(completion, upstream.name, new_response_id(),
                         tool_names(body.get("tools")))


def stream(upstream, body):
    """A generation the gateway runs: the same request, streamed, with usage at the end."""
    chat = {**chat_request(body, upstream.name),
            "stream": True, "stream_options": {"include_usage": True}}
    reader = ChatReader(upstream, new_response_id(), chat["model"], tool_names(body.get("tools")))
    return Generation(upstream, "chat/completions", chat, reader)
