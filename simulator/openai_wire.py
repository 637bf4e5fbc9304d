"""OpenAI wire shapes the simulator answers with: chat completions, chunks, embeddings, models.

Token accounting (exact, by the tokenizer in `text`):
- prompt tokens: the tokens of every message's text (string or text parts), of
  the function names and arguments of assistant tool calls, and of the `tools`
  definitions serialised as JSON;
- cached tokens: when a conversation opens with a system message whose exact
  text this simulator has already seen (since start or the last reset), its
  tokens count as cached, like a provider's prompt cache;
- completion tokens: the tokens emitted, one per streamed chunk; for a tool call
  the tokens of the function name and of its JSON arguments.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from .text import (
    EMBEDDING_DIMENSIONS,
    as_base64,
    content_text,
    count_tokens,
    embedding,
    pieces,
    reply_pieces,
    seed_of,
)

DEFAULT_MODELS = (
    ("gpt-4o", "chat"),
    ("gpt-4o-mini", "chat"),
    ("o4-mini", "chat"),
    ("text-embedding-3-small", "embedding"),
    ("text-embedding-3-large", "embedding"),
)
CREATED = 1_715_367_049


def error_body(message: str, *, error_type: str, code: str | None, param: str | None = None):
    return orjson.dumps(
        {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    )


def prompt_usage(body: dict[str, Any], seen_system_prompts: set[str]) -> tuple[int, int]:
    """(prompt_tokens, cached_tokens) of a chat request, by the rule in the module doc."""
    messages = body.get("messages") or []
    total = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += count_tokens(content_text(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = (call or {}).get("function") or {}
            total += count_tokens(str(function.get("name", "")))
            total += count_tokens(str(function.get("arguments", "")))
    if body.get("tools"):
        total += count_tokens(orjson.dumps(body["tools"]).decode())
    cached = 0
    if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system":
        system = content_text(messages[0].get("content"))
        if system in seen_system_prompts:
            cached = count_tokens(system)
        else:
            seen_system_prompts.add(system)
    return total, cached


def _value_for(schema: dict[str, Any], name: str, seed: int) -> Any:
    kind = schema.get("type")
    if schema.get("enum"):
        return schema["enum"][seed % len(schema["enum"])]
    if kind == "integer":
        return seed % 100
    if kind == "number":
        return round((seed % 10_000) / 100, 2)
    if kind == "boolean":
        return bool(seed % 2)
    if kind == "array":
        return [_value_for(schema.get("items") or {"type": "string"}, name, seed)]
    if kind == "object":
        return arguments_for(schema, seed)
    return f"{name} value"


def arguments_for(schema: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    """Arguments that fit a JSON schema's properties, derived from the seed."""
    properties = (schema or {}).get("properties") or {}
    return {
        name: _value_for(prop if isinstance(prop, dict) else {}, name, seed + i)
        for i, (name, prop) in enumerate(properties.items())
    }


def _tool_to_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The function to call, or None: named by tool_choice, or asked for by the last user turn."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("function")]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        return next((t["function"] for t in tools if t["function"].get("name") == wanted), None)
    if choice == "required":
        return tools[0]["function"]
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    asked = content_text(last.get("content")).lower()
    for tool in tools:
        if str(tool["function"].get("name", "")).lower() in asked:
            return tool["function"]
    return tools[0]["function"] if "tool" in asked else None


def _limit(body: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        if isinstance(body.get(key), int):
            return body[key]
    return None


def _stops(body: dict[str, Any]) -> set[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return {stop}
    return {s for s in stop or [] if isinstance(s, str)}


class Choice:
    """One planned answer: either text pieces or a tool call."""

    def __init__(
        self, body: dict[str, Any], index: int, prompt_seed: int, content: str | None = None
    ) -> None:
        self.index = index
        self.tool_call: dict[str, Any] | None = None
        self.pieces: list[str] = []
        seed = prompt_seed + index
        function = _tool_to_call(body)
        if function is not None:
            arguments = orjson.dumps(arguments_for(function.get("parameters"), seed)).decode()
            self.tool_call = {
                "id": f"call_sim{seed % 10**12:012d}",
                "type": "function",
                "function": {"name": function.get("name", ""), "arguments": arguments},
            }
            self.arguments_pieces = pieces(arguments)
            self.finish_reason = "tool_calls"
            self.completion_tokens = count_tokens(function.get("name", "")) + len(
                self.arguments_pieces
            )
            return
        fmt = body.get("response_format") or {}
        limit = _limit(body)
        if content is not None:
            self.pieces = pieces(content)
            truncated = limit is not None and len(self.pieces) > limit
            if truncated:
                self.pieces = self.pieces[:limit]
        elif fmt.get("type") in {"json_object", "json_schema"}:
            schema = (fmt.get("json_schema") or {}).get("schema")
            data = arguments_for(schema, seed) if schema else {"answer": "simulated"}
            self.pieces = pieces(orjson.dumps(data).decode())
            truncated = limit is not None and len(self.pieces) > limit
            if truncated:
                self.pieces = self.pieces[:limit]
        else:
            self.pieces, truncated = reply_pieces(seed, limit)
        stops = _stops(body)
        if stops:
            for i, piece in enumerate(self.pieces):
                if piece.strip() in stops:
                    self.pieces, truncated = self.pieces[:i], False
                    break
        self.finish_reason = "length" if truncated else "stop"
        self.completion_tokens = len(self.pieces)

    def message(self) -> dict[str, Any]:
        if self.tool_call:
            return {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [self.tool_call],
            }
        return {"role": "assistant", "content": "".join(self.pieces), "refusal": None}


class ChatPlan:
    """Everything about one chat answer, computed once, rendered whole or as chunks."""

    def __init__(
        self,
        body: dict[str, Any],
        model: str,
        seen_system_prompts: set[str],
        content: str | None = None,
    ) -> None:
        self.model = model
        self.prompt_tokens, self.cached_tokens = prompt_usage(body, seen_system_prompts)
        prompt_seed = seed_of(model, body.get("messages"), body.get("seed"))
        n = body.get("n") if isinstance(body.get("n"), int) and body["n"] > 0 else 1
        self.choices = [Choice(body, i, prompt_seed, content) for i in range(n)]
        self.id = f"chatcmpl-sim{prompt_seed % 10**16:016d}"
        self.created = int(time.time())

    def usage(self) -> dict[str, Any]:
        completion = sum(c.completion_tokens for c in self.choices)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def completion(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "fp_simulator",
                "choices": [
                    {
                        "index": c.index,
                        "message": c.message(),
                        "logprobs": None,
                        "finish_reason": c.finish_reason,
                    }
                    for c in self.choices
                ],
                "usage": self.usage(),
            }
        )

    def _chunk(self, choices: list[dict[str, Any]], include_usage: bool, usage=None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_simulator",
            "choices": choices,
        }
        if include_usage:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def chunks(self, include_usage: bool) -> list[bytes]:
        """SSE frames (`data: ...\\n\\n`), one token each, then `data: [DONE]`."""

        def delta(c: Choice, d: dict[str, Any], finish: str | None = None) -> list[dict]:
            return [{"index": c.index, "delta": d, "logprobs": None, "finish_reason": finish}]

        frames = []
        for c in self.choices:
            if c.tool_call:
                call = c.tool_call
                first = {
                    "index": 0,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
                opening = {"role": "assistant", "content": None, "tool_calls": [first]}
                frames.append(self._chunk(delta(c, opening), include_usage))
                for piece in c.arguments_pieces:
                    more = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                    frames.append(self._chunk(delta(c, more), include_usage))
            else:
                opening = {"role": "assistant", "content": "", "refusal": None}
                frames.append(self._chunk(delta(c, opening), include_usage))
                # The token frames differ only in their content: render the rest once
                # (the simulator is the upstream in benchmarks, so this path is hot).
                marker = "\x00token\x00"
                template = self._chunk(delta(c, {"content": marker}), include_usage)
                head, tail = template.split(orjson.dumps(marker))
                frames.extend(head + orjson.dumps(piece) + tail for piece in c.pieces)
            frames.append(self._chunk(delta(c, {}, c.finish_reason), include_usage))
        if include_usage:
            frames.append(self._chunk([], True, self.usage()))
        frames.append(b"data: [DONE]\n\n")
        return frames


def embeddings_body(body: dict[str, Any], model: str) -> bytes | None:
    """The embeddings answer, or None when the input is not a string, strings or token lists."""
    raw = body.get("input")
    if isinstance(raw, str) or (
        isinstance(raw, list) and raw and all(isinstance(i, int) for i in raw)
    ):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(i, (str, list)) for i in raw):
        inputs = raw
    else:
        return None
    dimensions = body.get("dimensions")
    if not isinstance(dimensions, int) or not 1 <= dimensions <= 4096:
        dimensions = EMBEDDING_DIMENSIONS
    as_b64 = body.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for index, item in enumerate(inputs):
        tokens += count_tokens(item) if isinstance(item, str) else len(item)
        key = item if isinstance(item, str) else list(item)
        vector = embedding(key, dimensions)
        data.append(
            {
                "object": "embedding",
                "index": index,
                "embedding": as_base64(vector) if as_b64 else vector,
            }
        )
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": CREATED, "owned_by": "meshgate-simulator"}


def models_body(names: list[str]) -> bytes:
    return orjson.dumps({"object": "list", "data": [model_object(n) for n in names]})
