"""Request checks made before anything is sent upstream.

Fields that could redirect a call (a base URL, a key, extra headers...) are
refused where a client library or a provider reads them as routing: the body's
own top-level fields (an SDK's `extra_body` lands there), each message's own
fields and `stream_options`. Never inside what is data to the model: tool
parameter schemas, `response_format` schemas, message content or `metadata`
values, where `organization`, `headers` or `aws_region` are ordinary property
names of ordinary tools. Shapes are checked only as far as needed to give a
clear 400 rather than a confusing upstream error; unknown fields pass on.
"""

from __future__ import annotations

from typing import Any

from .errors import GatewayError

REDIRECT_FIELDS = frozenset(
    {
        "api_base",
        "base_url",
        "api_key",
        "api_version",
        "api_type",
        "organization",
        "extra_headers",
        "extra_query",
        "extra_body",
        "headers",
        "custom_llm_provider",
        "deployment_id",
    }
)
REDIRECT_PREFIXES = ("aws_", "azure_")
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Objects inside the body whose own keys a client library or provider may read as routing.
ROUTING_OBJECTS = ("stream_options",)


def _redirecting(key: Any) -> bool:
    if not isinstance(key, str):
        return False
    lowered = key.lower()
    return lowered in REDIRECT_FIELDS or lowered.startswith(REDIRECT_PREFIXES)


def find_redirect_field(body: Any) -> str | None:
    """The JSON path of the first redirecting field where one can redirect a call, or None.

    Only keys are looked at, and only the body's own, each message's own and those of
    `ROUTING_OBJECTS`: never nested schemas, content or metadata (their keys are data)."""
    if not isinstance(body, dict):
        return None
    for key in body:
        if _redirecting(key):
            return str(key)
    for name in ROUTING_OBJECTS:
        inner = body.get(name)
        if isinstance(inner, dict):
            for key in inner:
                if _redirecting(key):
                    return f"{name}.{key}"
    messages = body.get("messages")
    if isinstance(messages, list):
        for index, message in enumerate(messages):
            if isinstance(message, dict):
                for key in message:
                    if _redirecting(key):
                        return f"messages[{index}].{key}"
    return None


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, message, code=code, param=param)


def _int_field(body: dict, name: str, minimum: int, maximum: int | None = None) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(f"'{name}' must be an integer of at least {minimum}.", name)
    if maximum is not None and value > maximum:
        raise _bad(f"'{name}' must be at most {maximum}.", name)


def _number_field(body: dict, name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _bad(f"'{name}' must be a number between {low:g} and {high:g}.", name)


def check_request(endpoint: str, body: dict[str, Any]) -> None:
    """Raise GatewayError 400 for a redirecting field or a malformed request."""
    field = find_redirect_field(body)
    if field is not None:
        raise _bad(
            f"The field '{field}' is not allowed: Meshgate decides where calls go.",
            field,
            code="forbidden_field",
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' is required and must be a string.", "model")
    if endpoint == "embeddings":
        _check_embeddings(body)
    elif endpoint == "classifications":
        _check_classifications(body)
    elif endpoint == "summaries":
        _check_summaries(body)
    else:
        _check_chat(body)


def _check_chat(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list.", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages[{index}] must be an object.", f"messages[{index}]")
        if message.get("role") not in ROLES:
            raise _bad(
                f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}.",
                f"messages[{index}].role",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _bad(
                f"messages[{index}].content must be a string or a list of parts.",
                f"messages[{index}].content",
            )
    for name in ("stream", "logprobs", "parallel_tool_calls"):
        if name in body and body[name] is not None and not isinstance(body[name], bool):
            raise _bad(f"'{name}' must be a boolean.", name)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("'stream_options' must be an object.", "stream_options")
    _int_field(body, "n", 1, 128)
    _int_field(body, "max_tokens", 1)
    _int_field(body, "max_completion_tokens", 1)
    _int_field(body, "seed", -(2**63))
    _number_field(body, "temperature", 0, 2)
    _number_field(body, "top_p", 0, 1)
    _number_field(body, "presence_penalty", -2, 2)
    _number_field(body, "frequency_penalty", -2, 2)
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise _bad("'stop' must be a string or a list of strings.", "stop")
    tools = body.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(tool, dict) for tool in tools)
    ):
        raise _bad("'tools' must be a list of objects.", "tools")
    response_format = body.get("response_format")
    if response_format is not None and not isinstance(response_format, dict):
        raise _bad("'response_format' must be an object.", "response_format")


def _check_embeddings(body: dict[str, Any]) -> None:
    value = body.get("input")
    if isinstance(value, str):
        if not value:
            raise _bad("'input' must not be empty.", "input")
        return
    if not isinstance(value, list) or not value:
        raise _bad("'input' must be a string or a non-empty list.", "input")
    for item in value:
        if isinstance(item, str):
            continue
        if isinstance(item, int) and not isinstance(item, bool):
            continue
        if isinstance(item, list) and all(
            isinstance(token, int) and not isinstance(token, bool) for token in item
        ):
            continue
        raise _bad("'input' items must be strings or token lists.", "input")


MAX_CLASSIFY_INPUTS = 256


def _check_classifications(body: dict[str, Any]) -> None:
    value = body.get("input")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _bad("'input' must be a string or a non-empty list of strings.", "input")
    if len(items) > MAX_CLASSIFY_INPUTS:
        raise _bad(f"'input' holds at most {MAX_CLASSIFY_INPUTS} texts.", "input")
    if not all(isinstance(item, str) and item.strip() for item in items):
        raise _bad("'input' items must be non-empty strings.", "input")


def _check_summaries(body: dict[str, Any]) -> None:
    value = body.get("input")
    if not isinstance(value, str) or not value.strip():
        raise _bad("'input' must be a non-empty string.", "input")
    if body.get("stream") not in (None, False):
        raise _bad("Summaries are not streamed.", "stream")
    _int_field(body, "max_tokens", 1, 4096)


# Values that ask for nothing beyond a provider's default: clients and SDK wrappers often
# send them on every call (n=1, penalties of 0), and a provider without the field gives
# the same answer without it.
NEUTRAL_VALUES: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "presence_penalty": (0,),
    "frequency_penalty": (0,),
    "response_format": ({"type": "text"},),
    "service_tier": ("auto", "default"),
}


def unsupported_field(body: dict[str, Any], unsupported: frozenset[str]) -> str | None:
    """The first field of `unsupported` the body asks for; null and neutral values
    (see NEUTRAL_VALUES) ask for nothing."""
    for name in unsupported:
        value = body.get(name)
        if value is None or _neutral(value, NEUTRAL_VALUES.get(name, ())):
            continue
        return name
    return None


def _neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    # True == 1 in Python: a boolean is only ever the same as a boolean.
    return any(
        isinstance(value, bool) == isinstance(candidate, bool) and value == candidate
        for candidate in neutral
    )
