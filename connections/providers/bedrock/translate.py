"""OpenAI chat requests to Converse requests, and Converse answers back to OpenAI's shape."""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..base import ProviderError, Usage

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
}
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}


def invalid(message: str, param: str | None = None) -> ProviderError:
    return ProviderError(
        message, status=400, code="invalid_request", error_type="invalid_request_error", param=param
    )


# --- OpenAI -> Converse ----------------------------------------------------------------------


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks = []
    for part in content if isinstance(content, list) else []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"text": part.get("text", "")})
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            head, _, data = url.partition(",")
            media = head[5:].split(";")[0] if head.startswith("data:") else ""
            if media not in IMAGE_FORMATS or ";base64" not in head:
                raise invalid("Bedrock takes images inline, as base64 data: URLs.", "messages")
            blocks.append({"image": {"format": IMAGE_FORMATS[media], "source": {"bytes": data}}})
        else:
            raise invalid(f"Message content of type {kind!r} is not supported here.", "messages")
    return blocks


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        arguments = orjson.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        raise invalid("A tool call's arguments are not valid JSON.", "messages")
    return {
        "toolUse": {
            "toolUseId": call.get("id") or "",
            "name": function.get("name", ""),
            "input": arguments,
        }
    }


def converse_request(body: dict[str, Any]) -> dict[str, Any]:
    """The Converse request for an OpenAI chat completion request."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    used_tools = False
    for message in body.get("messages") or []:
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.extend(_blocks(message.get("content")))
            continue
        if role == "user":
            turn, blocks = "user", _blocks(message.get("content"))
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            used_tools = used_tools or bool(calls)
            turn, blocks = "assistant", _blocks(message.get("content"))
            blocks += [_tool_use(c) for c in calls]
        elif role == "tool":
            used_tools = True
            content = message.get("content")
            text = (
                content
                if isinstance(content, str)
                else " ".join(b.get("text", "") for b in _blocks(content))
            )
            result = {"toolUseId": message.get("tool_call_id") or "", "content": [{"text": text}]}
            turn, blocks = "user", [{"toolResult": result}]
        else:
            raise invalid(f"Messages with role {role!r} are not supported here.", "messages")
        if messages and messages[-1]["role"] == turn:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": turn, "content": blocks})
    request: dict[str, Any] = {"messages": messages}
    if system:
        request["system"] = system
    config: dict[str, Any] = {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if limit is not None:
        config["maxTokens"] = limit
    if body.get("temperature") is not None:
        config["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        config["topP"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if config:
        request["inferenceConfig"] = config
    tool_config = _tool_config(body, used_tools)
    if tool_config is None and used_tools:
        # Converse refuses toolUse/toolResult blocks without a toolConfig, while OpenAI
        # clients often drop `tools` once the calls are made: declare the tools the
        # conversation used, with an open schema, so the follow-up turn still works.
        names = sorted(
            {
                block["toolUse"]["name"]
                for message in messages
                for block in message["content"]
                if "toolUse" in block and block["toolUse"]["name"]
            }
        )
        specs = [
            {"toolSpec": {"name": n, "inputSchema": {"json": {"type": "object"}}}} for n in names
        ]
        if specs:
            tool_config = {"tools": specs}
    if tool_config:
        request["toolConfig"] = tool_config
    return request


def _tool_config(body: dict[str, Any], used_tools: bool) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or (choice == "none" and not used_tools):
        return None
    specs = []
    for tool in tools:
        function = (tool or {}).get("function") or {}
        spec = {
            "name": function.get("name", ""),
            "inputSchema": {"json": function.get("parameters") or {"type": "object"}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict):
        config["toolChoice"] = {"tool": {"name": (choice.get("function") or {}).get("name", "")}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


# --- Converse -> OpenAI ----------------------------------------------------------------------


def usage_of(data: Any) -> Usage:
    data = data if isinstance(data, dict) else {}
    cache_read = int(data.get("cacheReadInputTokens") or 0)
    cache_write = int(data.get("cacheWriteInputTokens") or 0)
    return Usage(
        prompt_tokens=int(data.get("inputTokens") or 0) + cache_read + cache_write,
        completion_tokens=int(data.get("outputTokens") or 0),
        cached_tokens=cache_read,
    )


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def completion_from(data: dict[str, Any], model: str, request_id: str) -> tuple[dict, Usage]:
    blocks = ((data.get("output") or {}).get("message") or {}).get("content") or []
    text = "".join(b["text"] for b in blocks if isinstance(b, dict) and "text" in b)
    calls = [
        {
            "id": b["toolUse"].get("toolUseId", ""),
            "type": "function",
            "function": {
                "name": b["toolUse"].get("name", ""),
                "arguments": orjson.dumps(b["toolUse"].get("input", {})).decode(),
            },
        }
        for b in blocks
        if isinstance(b, dict) and "toolUse" in b
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    usage = usage_of(data.get("usage"))
    completion = {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(data.get("stopReason"), "stop"),
            }
        ],
        "usage": usage_json(usage),
    }
    return completion, usage
