"""The Anthropic Messages door (`POST /v1/messages`, `/v1/messages/count_tokens`).

A Messages request becomes a chat completion request (system, text and image blocks,
tools with their tool_use/tool_result round trips, stop_sequences, max_tokens), and the
chat answer comes back as a `message`; a stream as the Messages event sequence
(message_start, content_block_start/delta/stop, message_delta, message_stop). Errors
are in Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`, with the
same statuses, so the `anthropic` SDK raises its usual exceptions. A Meshgate key is
taken from `x-api-key` or `Authorization: Bearer`. Not translated: `top_k` and
`thinking` (chat completions have neither; they are dropped), `stop_sequence` in the
answer (a chat answer does not say which stop ended it: `end_turn`).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import orjson

from connections.tokens import estimate_prompt_tokens, text_length

from . import stages
from .call import Call, Reply
from .doors import DONE, Door, sse_events
from .errors import GatewayError

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)


def error_body(error: GatewayError, request_id: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(
        error.status, "api_error" if error.status >= 500 else "invalid_request_error"
    )
    return {
        "type": "error",
        "error": {"type": kind, "message": error.message},
        "request_id": request_id,
    }


def _text(blocks: Any, where: str) -> str:
    """The text of a string or a list of text blocks."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise _bad(f"'{where}' must be a string or a list of content blocks.", where)
    return "\n".join(
        b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text"
    )


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', '')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url") or "")
    else:
        raise _bad("An image's source must be base64 or url.", where)
    return {"type": "image_url", "image_url": {"url": url}}


def _user(content: list[Any], where: str) -> list[dict[str, Any]]:
    """A user turn's blocks: its tool results as tool messages, then what the user said."""
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        here = f"{where}[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            parts.append(_image(block, here))
        elif kind == "tool_result":
            text = _text(block.get("content") or "", here + ".content")
            if block.get("is_error"):
                text = "Error: " + text
            results.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id") or "", "content": text}
            )
        else:
            raise _bad(f"{here}: content blocks of type {kind!r} are not supported.", here)
    if not parts:
        return results
    if all(part["type"] == "text" for part in parts):
        return [*results, {"role": "user", "content": "\n".join(p["text"] for p in parts)}]
    return [*results, {"role": "user", "content": parts}]


def _assistant(content: list[Any], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name") or "", "arguments": arguments}
            calls.append({"id": block.get("id") or "", "type": "function", "function": function})
        elif kind not in ("thinking", "redacted_thinking"):
            raise _bad(
                f"{where}[{index}]: content blocks of type {kind!r} are not supported.", where
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("'tools' must be a list.", "tools")
    found = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise _bad(
                f"The tool {kind!r} is not available through Meshgate: only custom tools.", "tools"
            )
        function = {
            "name": tool.get("name"),
            "parameters": tool.get("input_schema") or {"type": "object"},
        }
        if tool.get("description"):
            function["description"] = tool["description"]
        found.append({"type": "function", "function": function})
    return found


def _tool_choice(choice: dict[str, Any]) -> Any:
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return {"auto": "auto", "any": "required", "none": "none"}.get(str(kind), "auto")


def to_chat(body: dict[str, Any], *, counting: bool = False) -> dict[str, Any]:
    """The chat completion request a Messages request asks for (`counting`: count_tokens'
    request, which has no max_tokens)."""
    max_tokens = body.get("max_tokens")
    if not counting and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise _bad("'max_tokens' is required and must be a positive integer.", "max_tokens")
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text(body["system"], "system")})
    given = body.get("messages")
    if not isinstance(given, list) or not given:
        raise _bad("'messages' must be a non-empty list.", "messages")
    for index, message in enumerate(given):
        where = f"messages[{index}]"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _bad(f"{where}.role must be 'user' or 'assistant'.", where)
        content = message.get("content")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
        elif not isinstance(content, list):
            raise _bad(f"{where}.content must be a string or a list of blocks.", where)
        elif role == "user":
            messages.extend(_user(content, where + ".content"))
        else:
            messages.append(_assistant(content, where + ".content"))
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if not counting:
        chat["max_tokens"] = max_tokens
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            chat["tool_choice"] = _tool_choice(choice)
            if choice.get("disable_parallel_tool_use") is True:
                chat["parallel_tool_calls"] = False
    user = (
        (body.get("metadata") or {}).get("user_id")
        if isinstance(body.get("metadata"), dict)
        else None
    )
    if isinstance(user, str):
        chat["user"] = user
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _input(arguments: str) -> Any:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def usage_of(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "input_tokens": usage.get("prompt_tokens") or 0,
        "output_tokens": usage.get("completion_tokens") or 0,
        "cache_read_input_tokens": cached,
    }


def from_chat(chat: dict[str, Any], message_id: str, model: str) -> dict[str, Any]:
    """A chat completion as a Messages `message`."""
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "input": _input(function.get("arguments") or ""),
            }
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason"), "end_turn"),
        "stop_sequence": None,
        "usage": usage_of(chat.get("usage")),
    }


def event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class MessageEvents:
    """Chat chunks to Messages events, one block open at a time."""

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id, self.model = message_id, model
        self.index = -1  # the open block's index
        self.open: str | None = None  # "text", or the open tool call's chat index as "tool:N"
        self.stop_reason = "end_turn"

    def start(self, input_tokens: int) -> bytes:
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        }
        return event("message_start", {"message": message})

    def _begin(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self.index += 1
        self.open = kind
        out.append(event("content_block_start", {"index": self.index, "content_block": block}))
        return out

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [event("content_block_stop", {"index": self.index})]

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        for choice in (chunk.get("choices") or ())[:1]:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self.open != "text":
                    out += self._begin("text", {"type": "text", "text": ""})
                out.append(
                    event(
                        "content_block_delta",
                        {"index": self.index, "delta": {"type": "text_delta", "text": text}},
                    )
                )
            for call in delta.get("tool_calls") or ():
                key = f"tool:{call.get('index', 0)}"
                function = call.get("function") or {}
                if self.open != key:
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id") or "",
                        "name": function.get("name") or "",
                        "input": {},
                    }
                    out += self._begin(key, block)
                if function.get("arguments"):
                    piece = {"type": "input_json_delta", "partial_json": function["arguments"]}
                    out.append(event("content_block_delta", {"index": self.index, "delta": piece}))
            if choice.get("finish_reason"):
                self.stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return out

    def end(self, input_tokens: int, output_tokens: int) -> bytes:
        out = self._close()
        usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
        out.append(
            event(
                "message_delta",
                {"delta": {"stop_reason": self.stop_reason, "stop_sequence": None}, "usage": usage},
            )
        )
        out.append(event("message_stop", {}))
        return b"".join(out)


class MessagesDoor(Door):
    name = "messages"

    def credential(self, headers: dict[bytes, bytes]) -> bytes | None:
        key = headers.get(b"x-api-key")
        return b"Bearer " + key.strip() if key else headers.get(b"authorization")

    async def translate(self, call: Call) -> None:
        call.door_body = body = call.body or {}
        call.body = to_chat(body)

    def error_reply(self, error: GatewayError, request_id: str) -> Reply:
        reply = super().error_reply(error, request_id)
        reply.headers.append((b"request-id", request_id.encode()))
        reply.body = orjson.dumps(error_body(error, request_id))
        return reply

    def _headers(self, call: Call, streamed: bool) -> list[tuple[bytes, bytes]]:
        head = SSE_HEADERS if streamed else [(b"content-type", b"application/json")]
        rid = call.request_id.encode()
        return [*head, (b"x-request-id", rid), (b"request-id", rid)]

    def answer(self, call: Call, reply: Reply) -> Reply:
        message_id = "msg_" + call.request_id.removeprefix("req_")
        model = call.model_requested
        if reply.stream is None:
            answer = from_chat(orjson.loads(reply.body or b"{}"), message_id, model)
            return Reply(200, self._headers(call, False), body=orjson.dumps(answer))
        events = MessageEvents(message_id, model)
        return Reply(200, self._headers(call, True), stream=self.frames(call, reply.stream, events))

    async def frames(
        self, call: Call, inner: AsyncIterator[bytes], events: MessageEvents
    ) -> AsyncIterator[bytes]:
        estimate = estimate_prompt_tokens(call.body or {})
        try:
            yield events.start(estimate)
            failed = False
            async for frame in inner:
                if frame == DONE:
                    continue
                out: list[bytes] = []
                for chunk in sse_events([frame]):
                    if "error" in chunk and not chunk.get("choices"):
                        error = GatewayError(
                            call.status or 502,
                            str((chunk["error"] or {}).get("message", "")),
                            code="upstream_error",
                        )
                        out.append(
                            event("error", {"error": error_body(error, call.request_id)["error"]})
                        )
                        failed = True
                    else:
                        out += events.feed(chunk)
                if out:
                    yield b"".join(out)
            # The inner stream has ended: the call is finished and its usage known.
            if not failed:
                usage = call.usage
                prompt = usage.prompt_tokens if usage else estimate
                yield events.end(prompt, usage.completion_tokens if usage else 0)
        finally:
            await inner.aclose()  # type: ignore[attr-defined]


class CountTokensDoor(MessagesDoor):
    """`POST /v1/messages/count_tokens`: the project's estimate of a request's input tokens,
    for a model the key may use; nothing goes upstream."""

    name = "messages.count_tokens"

    async def side(self, call: Call, method: str, path: str, read: Any) -> Reply:
        if method != "POST":
            raise GatewayError(405, "Method not allowed.", code="method_not_allowed")
        body = await read()
        call.body = body
        await stages.authenticate(call)
        call.door_body, call.body = body, to_chat(body, counting=True)
        call.endpoint = self.endpoint
        await stages.validate(call)
        await stages.resolve(call)
        tokens = estimate_prompt_tokens(call.body)
        if body.get("tools"):
            tokens += math.ceil(text_length(body["tools"]) / 4)
        return Reply(200, self._headers(call, False), body=orjson.dumps({"input_tokens": tokens}))
