"""The simulator's ASGI plumbing: one request read whole, and the ways an answer goes out.

Both wire modules (`openai_wire` via `app`, `bedrock_wire`) answer through these, so they sit
below `app` and import nothing of it.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

Headers = list[tuple[bytes, bytes]]
JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class Request:
    __slots__ = ("body", "headers", "method", "path", "query", "raw_path")

    def __init__(self, scope: dict[str, Any], body: bytes) -> None:
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        self.query: bytes = scope.get("query_string", b"")
        self.headers: Headers = scope["headers"]
        self.body = body

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    def param(self, name: str) -> str | None:
        values = parse_qs(self.query.decode("latin-1")).get(name)
        return values[0] if values else None


async def respond_ok(send, body: bytes) -> None:
    headers = [*JSON, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond(send, status: int, body: bytes, headers: Headers | None = None) -> None:
    headers = list(headers or JSON)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_faulty(send, body: bytes, fault: dict[str, Any], headers=None) -> None:
    """A whole answer, or a broken one when the fault says so (cut short, or not JSON)."""
    if fault.get("malformed_sse"):
        body = body[: len(body) // 2]
        return await respond(send, 200, body, headers)
    if fault.get("drop_after_chunks") is not None:
        head = [*(headers or JSON), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": head})
        # Half the promised bytes, then return without finishing: the server drops the connection.
        await send(
            {"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True}
        )
        return
    await respond(send, 200, body, headers)


async def stream(send, frames: list[bytes] | bytes, fault=None, headers=None) -> None:
    """Send frames; honour chunk_interval_ms, drop_after_chunks and malformed_sse.

    Without a fault the frames (a list, or already joined) go out as one chunk of the chunked
    response together with its end: the same bytes on the wire as a chunk and then the end,
    in one write instead of two.
    """
    await send({"type": "http.response.start", "status": 200, "headers": list(headers or SSE)})
    if not fault:
        body = frames if isinstance(frames, bytes) else b"".join(frames)
        await send({"type": "http.response.body", "body": body})
        return
    drop = fault.get("drop_after_chunks")
    if fault.get("malformed_sse"):
        cut = min(2, len(frames))
        frames = [*frames[:cut], b'data: {"id": "chatcmpl-broken", "choices": [\n\n', *frames[cut:]]
    if drop is not None:
        frames = frames[:drop]
    interval = (fault.get("chunk_interval_ms") or 0) / 1000
    if interval:
        for frame in frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            await asyncio.sleep(interval)
    elif frames:
        await send({"type": "http.response.body", "body": b"".join(frames), "more_body": True})
    if drop is not None:
        return  # never finish the response: the server closes the connection mid-stream
    await send({"type": "http.response.body", "body": b""})
