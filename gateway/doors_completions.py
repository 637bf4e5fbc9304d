"""The legacy completions door (`POST /v1/completions`): a prompt on a chat model.

The prompt becomes one user message of a chat completion, and the chat answer (or its
stream) comes back as `text_completion` objects. Errors keep OpenAI's shape. What a
chat model cannot do for a prompt (a suffix to insert before, log-probabilities of the
prompt, several prompts in one call, best_of) is refused with a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from .call import Call, Reply
from .doors import DONE, Door, json_reply, sse_events, stream_reply
from .errors import GatewayError

# Passed on as they are: the chat request takes them with the same meaning.
PASSED = (
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "stream",
    "stream_options",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "user",
)


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError(400, message, code="invalid_request", param=param)


def prompt_text(prompt: Any) -> str:
    """The one prompt as text: a string or a list of one string."""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad(
            "'prompt' must be a string (or a list of one string): chat models take text, "
            "one prompt a call.",
            "prompt",
        )
    return prompt


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completion request a legacy completion request asks for."""
    for name in ("suffix", "logprobs"):
        if body.get(name) is not None:
            raise _bad(f"'{name}' is not supported on chat models.", name)
    best_of = body.get("best_of")
    if best_of not in (None, 1):
        raise _bad("'best_of' is not supported on chat models.", "best_of")
    chat = {name: body[name] for name in PASSED if name in body}
    chat["messages"] = [{"role": "user", "content": prompt_text(body.get("prompt"))}]
    return chat


def _finish(choice: dict[str, Any]) -> str | None:
    reason = choice.get("finish_reason")
    return "stop" if reason == "tool_calls" else reason


def from_chat(chat: dict[str, Any], echo: str | None = None) -> dict[str, Any]:
    """A chat completion as a `text_completion` (`echo`: the prompt, put before each text)."""
    choices = []
    for choice in chat.get("choices") or ():
        message = choice.get("message") or {}
        text = message.get("content") or ""
        choices.append(
            {
                "text": (echo or "") + text,
                "index": choice.get("index", 0),
                "logprobs": None,
                "finish_reason": _finish(choice),
            }
        )
    found = {
        "id": "cmpl-" + str(chat.get("id") or "").removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": chat.get("created"),
        "model": chat.get("model"),
        "choices": choices,
    }
    if chat.get("usage") is not None:
        found["usage"] = chat["usage"]
    return found


def chunk_from_chat(chunk: dict[str, Any]) -> dict[str, Any]:
    """One streamed chat chunk as a streamed `text_completion` chunk."""
    choices = [
        {
            "text": (choice.get("delta") or {}).get("content") or "",
            "index": choice.get("index", 0),
            "logprobs": None,
            "finish_reason": _finish(choice),
        }
        for choice in chunk.get("choices") or ()
    ]
    found = {
        "id": "cmpl-" + str(chunk.get("id") or "").removeprefix("chatcmpl-"),
        "object": "text_completion",
        "created": chunk.get("created"),
        "model": chunk.get("model"),
        "choices": choices,
    }
    if chunk.get("usage") is not None:
        found["usage"] = chunk["usage"]
    return found


class CompletionsDoor(Door):
    name = "completions"

    async def translate(self, call: Call) -> None:
        call.door_body = body = call.body or {}
        call.body = to_chat(body)

    def answer(self, call: Call, reply: Reply) -> Reply:
        door_body = call.door_body or {}
        echo = prompt_text(door_body.get("prompt")) if door_body.get("echo") is True else None
        if reply.stream is None:
            chat = orjson.loads(reply.body or b"{}")
            return json_reply(call.request_id, orjson.dumps(from_chat(chat, echo)))
        return stream_reply(call.request_id, self.frames(reply.stream, echo))

    async def frames(self, inner: AsyncIterator[bytes], echo: str | None) -> AsyncIterator[bytes]:
        try:
            async for frame in inner:
                if frame == DONE or not frame.startswith(b"data: {"):
                    yield frame
                    continue
                events = sse_events([frame])
                if events and "error" in events[0]:
                    yield frame  # the error event, already in OpenAI's shape
                    continue
                out = []
                for chunk in events:
                    translated = chunk_from_chat(chunk)
                    if echo:
                        for choice in translated["choices"]:
                            choice["text"] = echo + choice["text"]
                        echo = None
                    out.append(b"data: " + orjson.dumps(translated) + b"\n\n")
                yield b"".join(out)
        finally:
            await inner.aclose()  # type: ignore[attr-defined]
