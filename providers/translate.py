"""Translate a Responses API create into Chat Completions, and the answer back.

Six providers (anthropic, gemini, zai, minimax, xiaomi, opencodego) serve only
OpenAI's Chat Completions. A create routed to one of them is carried over
field by field; a field that changes what the model does and has no faithful
Chat form (previous_response_id, anything unknown) is refused with Untranslatable
naming it. Agents (Codex, the Agents SDK) send every turn fields that ask for
nothing the model reads (reasoning summaries, includes, cache keys, client
metadata): `carried` drops those first and names them, so the client can be told.
A reasoning effort becomes the provider's own setting where it has one (EFFORT);
a namespace's functions become functions named namespace__function, whose calls
come back under their namespace. The answer, and the pieces a stream assembles
(providers/streaming.py), become a Response in the contract's shape, under an id
the gateway mints.
"""

import secrets
import time

from providers.errors import BadGateway, Untranslatable

CARRIED = ("temperature", "top_p", "parallel_tool_calls", "user")  # same name, same meaning
# Fields the gateway itself answers for, or that do not change what the model does.
HANDLED = frozenset({"model", "input", "instructions", "max_output_tokens", "tools",
                     "tool_choice", "text", "background", "stream", "metadata", "store",
                     "reasoning", *CARRIED})
# Fields that ask for nothing the model reads: dropped, and named, at a Chat-only provider.
DROPPED = ("include", "prompt_cache_key", "prompt_cache_retention", "client_metadata",
           "safety_identifier", "stream_options")
# A reasoning effort as each provider's own Chat setting; elsewhere it is dropped and
# named (Anthropic's Chat layer ignores reasoning_effort, and its thinking budget is a
# token count no effort maps to faithfully).
EFFORT = {
    "gemini": lambda effort: {"reasoning_effort": "high" if effort == "xhigh" else effort},
    "zai": lambda effort: {"thinking": {
        "type": "disabled" if effort in ("none", "minimal") else "enabled"}},
}
FUNCTIONS = ("function", "namespace")  # tools a Chat provider can be given
HOSTED_TOOLS = ("drop", "refuse")  # what to do with other tools: the operator's rule
SEPARATOR = "__"  # between a namespace and its function, in the name the provider sees
DEFAULTS = {"truncation": "disabled"}  # a field sent at its default asks for nothing
ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
INCOMPLETE = frozenset({"length", "content_filter"})  # finish reasons that cut the answer short


def new_response_id():
    """An id in OpenAI's form, minted by the gateway: resp_ and 32 hex digits."""
    return f"resp_{secrets.token_hex(16)}"


def carried(body, provider, hosted="drop"):
    """The create body a Chat-only provider can be sent, and the names of what was dropped
    from it: fields that ask for nothing the model reads (DROPPED, reasoning other than an
    effort the provider can take), reasoning items in the input (opaque: only the provider
    that made them can read them), and, where `hosted` is "drop", tools of kinds a Chat
    provider cannot run (with "refuse", chat_request refuses them, naming each)."""
    body, dropped = dict(body), []
    for field in DROPPED:
        if body.pop(field, None) not in (None, [], {}):
            dropped.append(field)
    reasoning = body.pop("reasoning", None)
    if isinstance(reasoning, dict):
        for key, value in reasoning.items():
            if key == "effort" and value is not None and provider in EFFORT:
                body["reasoning"] = {"effort": value}
            elif value is not None:
                dropped.append(f"reasoning.{key}")
    elif reasoning is not None:
        body["reasoning"] = reasoning  # chat_request says what is wrong with it
    if isinstance(body.get("input"), list):
        kept = [item for item in body["input"]
                if not (isinstance(item, dict) and item.get("type") == "reasoning")]
        if len(kept) < len(body["input"]):
            body["input"], dropped = kept, [*dropped, "input reasoning items"]
    if hosted == "drop" and isinstance(body.get("tools"), list):
        hosted_tools = [t for t in body["tools"]
                        if not (isinstance(t, dict) and t.get("type") in FUNCTIONS)]
        if hosted_tools:
            body["tools"] = [t for t in body["tools"] if t not in hosted_tools]
            dropped += [f"tools ({str(t.get('type') if isinstance(t, dict) else t)[:64]})"
                        for t in hosted_tools]
    return body, dropped


def tool_names(tools):
    """The names a Chat provider is given for a namespace's functions, each to the
    (namespace, name) its calls come back as: {"crm__lookup": ("crm", "lookup")}."""
    names = {}
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, dict) and tool.get("type") == "namespace":
            for function in tool.get("tools") or []:
                if isinstance(function, dict):
                    names[joined(tool.get("name"), function.get("name"))] = (
                        tool.get("name"), function.get("name"))
    return names


def joined(namespace, name):
    """A namespaced function's name as a Chat provider sees it."""
    return f"{namespace}{SEPARATOR}{name}"


def chat_request(body, provider):
    """The Chat Completions request for a Responses API create body, or Untranslatable."""
    for field, value in body.items():
        if field not in HANDLED and value not in (None, [], {}) and DEFAULTS.get(field) != value:
            raise Untranslatable(_refusal(field, provider), field)
    messages = []
    if body.get("instructions") is not None:
        messages.append({"role": "system", "content": _string(body, "instructions", "")})
    messages += _messages(body.get("input"), provider)
    chat = {"model": body["model"], "messages": messages}
    chat.update({k: body[k] for k in CARRIED if body.get(k) is not None})
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"], provider)
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"], provider)
    if body.get("text"):
        chat.update(_text(body["text"], provider))
    if body.get("reasoning") not in (None, {}):
        chat.update(_reasoning(body["reasoning"], provider))
    return chat


def _reasoning(reasoning, provider):
    """The provider's own setting for a reasoning effort (EFFORT); nothing else carries."""
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else None
    if not isinstance(effort, str) or provider not in EFFORT or set(reasoning) - {"effort"}:
        raise Untranslatable(_refusal("reasoning", provider), "reasoning")
    return EFFORT[provider](effort)


def _refusal(field, provider):
    if field == "previous_response_id":
        return (f"previous_response_id is not supported at {provider}, which has no Responses "
                "API: send the whole conversation in input instead")
    return f"{field} cannot be carried to {provider}, which has only Chat Completions"


def _messages(value, provider):
    """Chat messages for the create's input: a string, or a list of items."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise Untranslatable("input must be a string or a list of input items", "input")
    messages = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise Untranslatable(f"{where} must be an object", where)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where, provider))
        elif kind == "function_call":
            name = _string(item, "name", where)
            if item.get("namespace") is not None:
                name = joined(_string(item, "namespace", where), name)
            call = {"id": _string(item, "call_id", where), "type": "function", "function": {
                "name": name, "arguments": _string(item, "arguments", where)}}
            if messages and messages[-1]["role"] == "assistant":  # parallel calls: one message
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            content = output if isinstance(output, str) else _text_of(output, f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": _string(item, "call_id", where),
                             "content": content})
        else:
            raise Untranslatable(
                f"input items of type {str(kind)[:64]!r} cannot be carried to {provider}, "
                "which has only Chat Completions", f"{where}.type")
    return messages


def _message(item, where, provider):
    """One Chat message for a message item: its role, and its content as Chat parts."""
    role = ROLES.get(item.get("role"))
    if role is None:
        raise Untranslatable(f"{where}.role must be one of {', '.join(ROLES)}", f"{where}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise Untranslatable(f"{where}.content must be a string or a list of parts",
                             f"{where}.content")
    parts = [_part(part, f"{where}.content[{j}]", provider) for j, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):  # plain text: what every provider takes
        return {"role": role, "content": "\n".join(part["text"] for part in parts)}
    if role != "user":
        raise Untranslatable(f"only user messages may hold images at {provider}",
                             f"{where}.content")
    return {"role": role, "content": parts}


def _part(part, where, provider):
    """One Chat content part for a Responses content part."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": _string(part, "text", where)}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        image = {"url": part["image_url"]}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_image":
        raise Untranslatable(f"{where}: {provider} takes images by image_url only, not file_id",
                             f"{where}.image_url")
    raise Untranslatable(f"content parts of type {str(kind)[:64]!r} cannot be carried to "
                         f"{provider}, which has only Chat Completions", f"{where}.type")


def _text_of(parts, where):
    """The text of a list of text parts (a function call's output given as parts)."""
    if not isinstance(parts, list):
        raise Untranslatable(f"{where} must be a string or a list of text parts", where)
    texts = []
    for j, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
            raise Untranslatable(f"{where}[{j}] must be a text part", f"{where}[{j}]")
        texts.append(_string(part, "text", f"{where}[{j}]"))
    return "\n".join(texts)


def _tools(tools, provider):
    """Function tools in Chat's shape, a namespace's as functions of their own (joined
    names); any other kind of tool is refused."""
    if not isinstance(tools, list):
        raise Untranslatable("tools must be a list", "tools")
    chat_tools = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind == "namespace":
            chat_tools += _namespace(tool, f"tools[{i}]", provider)
        elif kind == "function":
            chat_tools.append(_function(tool, f"tools[{i}]"))
        else:
            raise Untranslatable(
                f"tools of type {str(kind)[:64]!r} are built into the Responses API; {provider} "
                "has only Chat Completions, where only function tools can be carried",
                f"tools[{i}].type")
    names = [tool["function"]["name"] for tool in chat_tools]
    if len(set(names)) < len(names):
        raise Untranslatable("two tools would reach the provider under one name (a "
                             f"namespace's functions are named namespace{SEPARATOR}function)",
                             "tools")
    return chat_tools


def _namespace(tool, where, provider):
    """A namespace's functions, each named namespace__function, its description first."""
    namespace = _string(tool, "name", where)
    functions = tool.get("tools")
    if not isinstance(functions, list):
        raise Untranslatable(f"{where}.tools must be a list", f"{where}.tools")
    chat_tools = []
    for j, function in enumerate(functions):
        inner = f"{where}.tools[{j}]"
        if not isinstance(function, dict) or function.get("type") != "function":
            raise Untranslatable(f"only function tools of a namespace can be carried to "
                                 f"{provider}", f"{inner}.type")
        chat = _function(function, inner)["function"]
        chat["name"] = joined(namespace, chat["name"])
        about = " ".join(d for d in (tool.get("description"), function.get("description"))
                         if isinstance(d, str) and d)
        if about:
            chat["description"] = about
        chat_tools.append({"type": "function", "function": chat})
    return chat_tools


def _function(tool, where):
    """One function tool in Chat's shape."""
    _string(tool, "name", where)
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict")
                if tool.get(k) is not None}
    return {"type": "function", "function": function}


def _tool_choice(choice, provider):
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = _string(choice, "name", "tool_choice")
        if choice.get("namespace") is not None:
            name = joined(_string(choice, "namespace", "tool_choice"), name)
        return {"type": "function", "function": {"name": name}}
    raise Untranslatable(f"tool_choice can be auto, none, required or a function at {provider}",
                         "tool_choice")


def _text(text, provider):
    """response_format for text.format; text.verbosity has no Chat form."""
    if not isinstance(text, dict):
        raise Untranslatable("text must be an object", "text")
    for field, value in text.items():
        if field != "format" and value is not None:
            raise Untranslatable(_refusal(f"text.{field}", provider), f"text.{field}")
    fmt = text.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        return {}
    if kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description")
                  if fmt.get(k) is not None}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    raise Untranslatable("text.format.type must be text, json_object or json_schema",
                         "text.format.type")


def _string(obj, key, where):
    """obj[key], which must be a string; `where` names obj in the refusal ('' for the body)."""
    value = obj.get(key)
    param = f"{where}.{key}" if where else key
    if not isinstance(value, str):
        raise Untranslatable(f"{param} must be a string", param)
    return value


# The way back: Chat Completions pieces into a Response.

def chat_response(completion, provider, response_id, names=None):
    """The Response for a (non-streamed) Chat Completions answer; `names` (tool_names)
    gives a namespaced function's call back its namespace."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise BadGateway(provider, f"{provider} answered a chat completion with no message")
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise BadGateway(provider, f"{provider} answered a malformed tool call")
        calls.append((call.get("id"), function.get("name"), function.get("arguments")))
    return response(
        response_id, completion.get("model"), status_for(choice.get("finish_reason")),
        output_items(response_id, _content_text(message.get("content")), calls, names),
        usage=completion.get("usage"), created_at=completion.get("created"),
    )


def response(response_id, model, status, output, usage=None, created_at=None, error=None):
    """A Response object in the contract's shape."""
    return {
        "id": response_id, "object": "response",
        "created_at": created_at if isinstance(created_at, int) else int(time.time()),
        "model": model, "status": status, "output": output,
        "usage": response_usage(usage), "error": error,
    }


def output_items(response_id, text, calls, names=None):
    """Output items: one assistant message with the text, then one item per tool call."""
    items = [message_item(response_id, text)] if text else []
    return items + [call_item(call_id, name, arguments, names=names)
                    for call_id, name, arguments in calls]


def message_item(response_id, text, status="completed"):
    """The assistant message of a translated response. Its id follows from the response's,
    so a stream's item keeps one id from output_item.added to the final Response."""
    return {"type": "message", "id": f"msg_{response_id.removeprefix('resp_')}",
            "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def call_item(call_id, name, arguments, status="completed", names=None):
    """A function call of a translated response; its id follows from the call's. A
    namespaced function's (in `names`, from tool_names) is under its namespace again."""
    namespace, name = (names or {}).get(name, (None, name))
    item = {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id,
            "name": name, "arguments": arguments or "", "status": status}
    if namespace is not None:
        item["namespace"] = namespace
    return item


def status_for(finish_reason):
    """completed, or incomplete when the provider cut the answer short."""
    return "incomplete" if finish_reason in INCOMPLETE else "completed"


def response_usage(usage):
    """Chat's prompt/completion token counts under the Responses API's names."""
    if not isinstance(usage, dict):
        return None
    renamed = {"prompt_tokens": "input_tokens", "completion_tokens": "output_tokens"}
    return {renamed.get(k, k): v for k, v in usage.items()}


def _content_text(content):
    """A Chat message's text: a string, or text parts some providers send."""
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else ""
