"""OpenAI server-sent events passed on frame by frame, and the usage read on the way."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from django.conf import settings

from meshsite.lib import http

from ..base import ConnectionConfig, ProviderError, Stream, Usage
from .errors import (
    malformed_error,
    sanitize,
    stream_broken,
    stream_failure,
    upstream_error_fields,
)

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    parts = []
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            parts.append(_text_of(message.get("content")))
            for call in message.get("tool_calls") or []:
                parts.append(str(((call or {}).get("function") or {}).get("arguments", "")))
    if body.get("tools"):
        parts.append(orjson.dumps(body["tools"]).decode())
    raw = body.get("input")
    if isinstance(raw, str):
        parts.append(raw)
    elif isinstance(raw, list):
        parts.extend(i if isinstance(i, str) else " " * CHARS_PER_TOKEN * len(i) for i in raw)
    return sum(estimate_tokens(p) for p in parts)


def usage_from(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    details = data.get("prompt_tokens_details") or {}
    return Usage(
        prompt_tokens=int(data.get("prompt_tokens") or 0),
        completion_tokens=int(data.get("completion_tokens") or 0),
        cached_tokens=int((details if isinstance(details, dict) else {}).get("cached_tokens") or 0),
    )


def completion_text(parsed: dict[str, Any]) -> str:
    texts = []
    for choice in parsed.get("choices") or []:
        message = (choice or {}).get("message") or {}
        texts.append(_text_of(message.get("content")))
        for call in message.get("tool_calls") or []:
            function = (call or {}).get("function") or {}
            texts.append(f"{function.get('name', '')}{function.get('arguments', '')}")
    return "".join(texts)


class SSEStream(Stream):
    """An upstream OpenAI SSE stream, passed on as it arrives while usage and the message are read.

    Each chunk it yields holds the events one upstream read completed, except the stream's
    first event, which goes on alone as soon as it is read (the rest of its read follows).

    `first_byte_at` is a `time.monotonic()` reading.
    """

    def __init__(
        self,
        response: http.Response,
        *,
        request_body: dict[str, Any],
        forward_usage_chunk: bool,
        config: ConnectionConfig,
    ) -> None:
        self._response = response
        self._request_body = request_body
        self._forward_usage_chunk = forward_usage_chunk
        self._config = config
        self._closed = False
        self._content: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}
        self.usage = Usage()
        self.message: dict[str, Any] = {"role": "assistant", "content": None}
        self.finish_reason: str | None = None
        self.first_byte_at: float | None = None
        self._upstream_usage: Usage | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        done = False
        sent = 0
        # The unfinished event: only each read's new bytes are searched (linear time), and it
        # may not grow past MESHGATE_MAX_SSE_EVENT_BYTES (the worker's memory stays flat).
        buffer = bytearray()
        limit = settings.MESHGATE_MAX_SSE_EVENT_BYTES
        carriage = False  # the last read ended in "\r": its "\n" may start the next one
        try:
            async for data in self._response.aiter_bytes():
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                if carriage:
                    data, carriage = b"\r" + data, False
                if b"\r" in data:
                    if data.endswith(b"\r"):
                        data, carriage = data[:-1], True
                    data = data.replace(b"\r\n", b"\n")
                if buffer:
                    searched = len(buffer) - 1  # an event's end may straddle two reads
                    buffer += data
                    end = buffer.rfind(b"\n\n", searched) + 2
                    if end >= 2:
                        events = bytes(buffer[:end])
                        del buffer[:end]
                else:  # the usual case: reads end where events end, nothing is copied
                    end = data.rfind(b"\n\n") + 2
                    if end < 2:
                        buffer += data
                    else:
                        events = data if end == len(data) else data[:end]
                        if end < len(data):
                            buffer += data[end:]
                if len(buffer) > limit:
                    raise event_too_large(limit)
                if end < 2:
                    continue
                # Every event this read completed is passed on in one chunk: one hop through
                # the gateway and one write to the client, not one per token. Events kept as
                # they came go on as the upstream's own bytes: `out` gathers runs of them.
                out: list[bytes] = []
                failure: Exception | None = None
                start = position = 0  # start: the first byte of `events` not yet handled
                while position < end:
                    cut = events.find(b"\n\n", position)
                    event, following = events[position:cut], cut + 2
                    if event.startswith(b"data: ") and b"\n" not in event:
                        payload, verbatim = event[6:], True
                    else:
                        payload, verbatim = _data_of(event), False
                    if payload == b"[DONE]":
                        done = True
                        break
                    try:
                        keep = payload is not None and self._read(payload)
                    except Exception as exc:  # what was read before a failure is still delivered
                        failure = exc
                        break
                    if not (keep and verbatim):  # dropped, or passed on in its canonical form
                        if start < position:
                            out.append(events[start:position])
                        if keep:  # one data line per payload line, as SSE carries them
                            out.append(b"data: " + payload.replace(b"\n", b"\ndata: ") + b"\n\n")
                        start = following
                    if keep and not sent:
                        # The stream's first event goes on alone: the first byte to the client
                        # does not wait for the rest of a long first read to be read.
                        if start < following:
                            out.append(events[start:following])
                            start = following
                        sent = 1
                        yield b"".join(out)
                        out = []
                    position = following
                if start < position:
                    out.append(events[start:position])
                if out:
                    sent += 1
                    yield b"".join(out)
                if failure is not None:
                    raise failure
                if done:
                    break
        except (ProviderError, http.TransportError) as exc:
            raise stream_failure(exc, sent)
        finally:
            await self.aclose()
        if not done and self.finish_reason is None:
            raise stream_broken(sent, "ended early")
        self._finish()

    def _read(self, payload: bytes) -> bool:
        """Take what is needed from one frame; True when it is to be passed on."""
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            raise malformed_error("stream")
        if not isinstance(chunk, dict):
            raise malformed_error("stream")
        if isinstance(chunk.get("error"), dict):
            message, code, _ = upstream_error_fields(payload)
            detail = sanitize(message, self._config) if message else ""
            raise ProviderError(
                "The provider reported an error mid-stream" + (f": {detail}" if detail else "."),
                status=502,
                code=code or "upstream_error",
            )
        usage = usage_from(chunk.get("usage"))
        if usage is not None:
            self._upstream_usage = usage
        choices = chunk.get("choices") or []
        if not choices:
            return usage is None or self._forward_usage_chunk
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self._content.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                entry = self._calls.setdefault(
                    call.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                entry["id"] = call.get("id") or entry["id"]
                function = call.get("function") or {}
                entry["function"]["name"] += function.get("name") or ""
                entry["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return True

    def _finish(self) -> None:
        content = "".join(self._content)
        self.message = {"role": "assistant", "content": content or None}
        if self._calls:
            self.message["tool_calls"] = [self._calls[i] for i in sorted(self._calls)]
        if self._upstream_usage is not None:
            self.usage = self._upstream_usage
            return
        calls = "".join(
            c["function"]["name"] + c["function"]["arguments"] for c in self._calls.values()
        )
        self.usage = Usage(
            prompt_tokens=estimate_prompt_tokens(self._request_body),
            completion_tokens=estimate_tokens(content + calls),
            estimated=True,
        )

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._response.aclose()


def event_too_large(limit: int) -> ProviderError:
    """An upstream event past the size limit: the stream ends (its connection closed)."""
    return ProviderError(
        f"The provider sent a stream event over {limit} bytes; the stream was stopped.",
        status=502,
        code="upstream_event_too_large",
    )


def _data_of(event: bytes) -> bytes | None:
    """The data of one SSE event (lines joined), or None for comments and empty events."""
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return lines[0] if len(lines) == 1 else b"\n".join(lines)
