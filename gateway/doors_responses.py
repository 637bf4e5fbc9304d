"""The OpenAI Responses door (`POST /v1/responses`), translated onto every chat model.

A Responses request becomes a chat completion request: `instructions` a system message,
`input` (a string, or items: messages, `function_call` and `function_call_output`) the
messages after those of the `previous_response_id` chain, function tools and
`tool_choice`, `text.format` as `response_format`, `max_output_tokens` as `max_tokens`,
`temperature`/`top_p`. The chat answer comes back as a `response` (output items:
a `message` with `output_text`, `function_call`s), a stream as the typed events in
order (response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta, ..., response.completed).
Errors keep OpenAI's shape. Built-in tools (web search, file search, computer use, code
interpreter...) are refused with a 400 naming the tool. Responses are stored
(`gateway.responses_store`) unless `store` is false. Translated everywhere, OpenAI and
Azure included: the pipeline's one internal request is a chat completion.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from . import responses_store
from .call import Call, Reply
from .doors import DONE, Door, json_reply, sse_events, stream_reply
from .errors import GatewayError
from .responses_output import (
    ResponseEvents,
    assistant_message,
    output_items,
    response_object,
    usage_of,
)

MESSAGE_ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text", "text", "refusal")


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)


def _part_text(part: dict[str, Any]) -> str:
    return str(part.get("text") if part.get("type") != "refusal" else part.get("refusal")) or ""


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in MESSAGE_ROLES:
        raise _bad(f"{where}.role must be one of {', '.join(MESSAGE_ROLES)}.", where)
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _bad(f"{where}.content must be a string or a list of parts.", where)
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PARTS:
            parts.append({"type": "text", "text": _part_text(part)})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image: dict[str, Any] = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _bad(
                f"{where}.content[{index}]: parts of type {kind!r} are not supported.", where
            )
    if role != "user" or all(part["type"] == "text" for part in parts):
        return {"role": role, "content": "".join(part.get("text", "") for part in parts)}
    return {"role": role, "content": parts}


def input_messages(given: Any) -> list[dict[str, Any]]:
    """`input` as chat messages: consecutive function calls are one assistant turn."""
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    if not isinstance(given, list) or not given:
        raise _bad("'input' must be a string or a non-empty list of items.", "input")
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(given):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            raise _bad(f"{where} must be an object.", where)
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            function = {"name": item.get("name") or "", "arguments": item.get("arguments") or "{}"}
            call = {"id": item.get("call_id") or "", "type": "function", "function": function}
            last = messages[-1] if messages else None
            if (
                last is not None
                and last["role"] == "assistant"
                and isinstance(last.get("content"), str | None)
            ):
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            if isinstance(output, list):
                output = "".join(_part_text(p) for p in output if isinstance(p, dict))
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id") or "",
                    "content": str(output or ""),
                }
            )
        elif kind != "reasoning":
            raise _bad(f"{where}: items of type {kind!r} are not supported.", where)
    return messages


def chat_tools(tools: Any) -> list[dict[str, Any]]:
    """Function tools in chat's shape; 400 naming a built-in tool the gateway cannot provide."""
    if not isinstance(tools, list):
        raise _bad("'tools' must be a list.", "tools")
    found = []
    for tool in tools:
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise _bad(
                f"The built-in tool '{kind}' is not available through Meshgate: only function "
                "tools are.",
                "tools",
            )
        function = {
            k: tool[k]
            for k in ("name", "description", "parameters", "strict")
            if tool.get(k) is not None
        }
        found.append({"type": "function", "function": function})
    return found


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    raise _bad("'tool_choice' must be auto, none, required or a function.", "tool_choice")


def _format(text: Any) -> dict[str, Any] | None:
    fmt = (text or {}).get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        schema = {
            k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None
        }
        return {"type": "json_schema", "json_schema": schema}
    raise _bad(f"text.format of type {fmt['type']!r} is not supported.", "text.format")


def to_chat(body: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The chat completion request a Responses request asks for, after `history` (the chat
    messages of its previous_response_id chain)."""
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("'instructions' must be a string.", "instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    messages += history or []
    messages += input_messages(body.get("input"))
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p", "user"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("tools"):
        chat["tools"] = chat_tools(body["tools"])
        if body.get("tool_choice") is not None:
            chat["tool_choice"] = _tool_choice(body["tool_choice"])
        if body.get("parallel_tool_calls") is False:
            chat["parallel_tool_calls"] = False
    response_format = _format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


class ResponsesDoor(Door):
    name = "responses"

    async def translate(self, call: Call) -> None:
        call.door_body = body = call.body or {}
        history: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous is not None:
            assert call.principal is not None
            history = await responses_store.chain(previous, call.principal.user_id)
        call.body = to_chat(body, history)

    def answer(self, call: Call, reply: Reply) -> Reply:
        body = call.door_body or {}
        stem = call.request_id.removeprefix("req_")
        response_id, created = "resp_" + stem, int(time.time())
        if reply.stream is None:
            chat = orjson.loads(reply.body or b"{}")
            choice = (chat.get("choices") or [{}])[0]
            output = output_items(choice.get("message") or {}, stem)
            status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
            response = response_object(
                body, response_id, created, output, status=status, usage=usage_of(chat.get("usage"))
            )
            self.store(call, response)
            return json_reply(call.request_id, orjson.dumps(response))
        events = ResponseEvents(body, response_id, created, stem)
        return stream_reply(call.request_id, self.frames(call, reply.stream, events))

    async def frames(
        self, call: Call, inner: AsyncIterator[bytes], events: ResponseEvents
    ) -> AsyncIterator[bytes]:
        try:
            yield events.start()
            failed = False
            async for frame in inner:
                if frame == DONE:
                    continue
                out: list[bytes] = []
                for chunk in sse_events([frame]):
                    if "error" in chunk and not chunk.get("choices"):
                        out.append(events.error(chunk["error"] or {}))
                        failed = True
                    else:
                        out += events.feed(chunk)
                if out:
                    yield b"".join(out)
            if not failed:  # the inner stream has ended: the call is finished, its usage known
                usage = call.usage
                counts = (
                    {
                        "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                    }
                    if usage
                    else {}
                )
                last, response = events.end(usage_of(counts))
                self.store(call, response)
                yield last
        finally:
            await inner.aclose()  # type: ignore[attr-defined]

    def store(self, call: Call, response: dict[str, Any]) -> None:
        """Keep the response and its conversation for GET and previous_response_id, unless
        `store` is false: a write nobody waits for."""
        body = call.door_body or {}
        if body.get("store") is False or call.principal is None:
            return
        internal = call.body or {}
        # The instructions are not carried along a chain (as the API does); the rest is.
        messages = list(internal.get("messages") or ())[1 if body.get("instructions") else 0 :]
        messages.append(assistant_message(response["output"]))
        responses_store.keep(call.principal, response, messages)
