"""ConverseStream's AWS event-stream frames, re-emitted as OpenAI chat.completion.chunk frames."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

from meshsite.lib import http

from ..base import ProviderError, Stream, Usage
from ..openai import malformed_error, stream_broken, stream_failure
from .translate import FINISH_REASONS, usage_json, usage_of


class ConverseStream(Stream):
    """ConverseStream frames in, OpenAI chunk frames out. `first_byte_at` is monotonic."""

    def __init__(self, response: http.Response, *, model: str, include_usage: bool) -> None:
        self._response = response
        self._include_usage = include_usage
        self._closed = False
        self._envelope = {
            "id": f"chatcmpl-{response.headers.get('x-amzn-requestid') or uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._tool_index: dict[int, int] = {}
        self._content: list[str] = []
        self._calls: list[dict[str, Any]] = []
        self.usage = Usage()
        self.message: dict[str, Any] = {"role": "assistant", "content": None}
        self.finish_reason: str | None = None
        self.first_byte_at: float | None = None

    def _frame(self, delta: dict | None, finish: str | None = None, usage=None) -> bytes:
        chunk: dict[str, Any] = dict(self._envelope)
        chunk["choices"] = (
            []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        )
        if self._include_usage:
            chunk["usage"] = usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    async def __aiter__(self):
        parser = EventStreamBuffer()
        sent = 0
        got_metadata = False
        try:
            async for data in self._response.aiter_bytes():
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                parser.add_data(data)
                for message in parser:
                    frame = self._translate(message)
                    if frame is not None:
                        got_metadata = got_metadata or frame is _METADATA
                        if frame is _METADATA:
                            if not self._include_usage:
                                continue
                            frame = self._frame(None, usage=usage_json(self.usage))
                        sent += 1
                        yield frame
        except ParserError:
            raise malformed_error("event stream")
        except (ProviderError, http.TransportError) as exc:
            raise stream_failure(exc, sent)
        finally:
            await self.aclose()
        if self.finish_reason is None or not got_metadata:
            raise stream_broken(sent, "ended early")
        self.message = {"role": "assistant", "content": "".join(self._content) or None}
        if self._calls:
            self.message["tool_calls"] = self._calls

    def _translate(self, message) -> bytes | object | None:
        headers = message.headers
        kind = headers.get(":message-type")
        if kind != "event":
            raise _stream_exception(headers.get(":exception-type") or "", message.payload)
        event = headers.get(":event-type")
        try:
            payload = orjson.loads(message.payload) if message.payload else {}
        except orjson.JSONDecodeError:
            raise malformed_error("event stream")
        if event == "messageStart":
            return self._frame({"role": "assistant", "content": ""})
        if event == "contentBlockStart":
            use = (payload.get("start") or {}).get("toolUse")
            if not use:
                return None
            index = len(self._calls)
            self._tool_index[payload.get("contentBlockIndex", 0)] = index
            call = {"id": use.get("toolUseId", ""), "type": "function"}
            call["function"] = {"name": use.get("name", ""), "arguments": ""}
            self._calls.append(call)
            return self._frame({"tool_calls": [{"index": index, **call}]})
        if event == "contentBlockDelta":
            delta = payload.get("delta") or {}
            if "text" in delta:
                self._content.append(delta["text"])
                return self._frame({"content": delta["text"]})
            if "toolUse" in delta:
                index = self._tool_index.get(payload.get("contentBlockIndex", 0), 0)
                piece = delta["toolUse"].get("input", "")
                if index < len(self._calls):
                    self._calls[index]["function"]["arguments"] += piece
                return self._frame(
                    {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                )
            return None  # reasoning content and the like are not part of OpenAI's shape
        if event == "messageStop":
            self.finish_reason = FINISH_REASONS.get(payload.get("stopReason"), "stop")
            return self._frame({}, self.finish_reason)
        if event == "metadata":
            self.usage = usage_of(payload.get("usage"))
            return _METADATA
        return None

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._response.aclose()


_METADATA = object()


def _stream_exception(kind: str, payload: bytes) -> ProviderError:
    if kind.lower().startswith("throttling"):
        return ProviderError(
            "The provider is rate limiting requests; try again later.",
            status=429,
            code="rate_limited",
            error_type="rate_limit_error",
            retryable=True,
        )
    return ProviderError("The provider failed mid-stream.", status=502, code="upstream_error")
