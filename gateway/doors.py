"""Doors: the client wire formats, to and from the one internal request and reply.

Today's door is OpenAI's: chat completions (plain and streamed), embeddings, and
Meshgate's task endpoints (classifications, summaries) in the same style. Its JSON
body *is* the internal request (`Call.body`), the shape the provider adapters
translate from (`connections.providers.base.Adapter`); a door for another format
(Responses, Anthropic Messages) translates its body into that shape and the reply
back. The internal reply is a `Reply`: a JSON body, or SSE frames ending in DONE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from .call import Reply
from .errors import GatewayError

if TYPE_CHECKING:
    from .call import Call

JSON_HEADER = (b"content-type", b"application/json")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
DONE = b"data: [DONE]\n\n"

# Path -> endpoint (the record's `endpoint`), for the OpenAI door.
ROUTES = {
    "/v1/chat/completions": "chat.completions",
    "/v1/embeddings": "embeddings",
    # Task endpoints, served by local Hugging Face models (connections/providers/huggingface).
    "/v1/classifications": "classifications",
    "/v1/summaries": "summaries",
}
ENDPOINTS = tuple(ROUTES.values())


def headers(request_id: str, extra: list[tuple[bytes, bytes]] | None = None) -> list[Any]:
    found: list[tuple[bytes, bytes]] = [JSON_HEADER, (b"x-request-id", request_id.encode())]
    if extra:
        found.extend(extra)
    return found


def json_reply(request_id: str, body: bytes, status: int = 200) -> Reply:
    return Reply(status, headers(request_id), body=body)


def stream_reply(request_id: str, frames: Any) -> Reply:
    return Reply(200, [*SSE_HEADERS, (b"x-request-id", request_id.encode())], stream=frames)


def error_reply(error: GatewayError, request_id: str) -> Reply:
    extra = []
    if error.status == 401:
        extra.append((b"www-authenticate", b"Bearer"))
    if error.retry_after is not None:
        extra.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
    extra.extend(error.extra_headers)
    return Reply(error.status, headers(request_id, extra), body=error.body())


class Door:
    """Another wire format in front of the same pipeline (see ARCHITECTURE.md, "Doors").

    `translate` (the `translate` stage, after `authenticate`) turns the client's body into
    the internal request and keeps the original in `call.door_body`; `answer` turns the
    pipeline's 200 reply (JSON, or the SSE frames ending in DONE) into the door's own;
    `error_reply` gives a refusal in the door's error shape. The record's endpoint is
    `name`. This base is OpenAI's shape, which the legacy completions door keeps.
    """

    name = "chat.completions"  # what the record's endpoint says
    endpoint = "chat.completions"  # the internal endpoint the stages serve

    def credential(self, headers: dict[bytes, bytes]) -> bytes | None:
        return headers.get(b"authorization")

    async def translate(self, call: Call) -> None:
        raise NotImplementedError

    def answer(self, call: Call, reply: Reply) -> Reply:
        raise NotImplementedError

    def error_reply(self, error: GatewayError, request_id: str) -> Reply:
        return error_reply(error, request_id)

    async def side(self, call: Call, method: str, path: str, read: Any) -> Reply:
        """A side path's answer (see `gateway.door_routes`)."""
        raise GatewayError(404, f"Unknown path {path[:100]}.", code="not_found")


OPENAI = Door()


def reply_error(call: Call, error: GatewayError) -> Reply:
    """A refusal in the shape of the call's door."""
    door = call.door
    return (door.error_reply if door is not None else error_reply)(error, call.request_id)


def sse_events(frames: list[bytes]) -> list[dict[str, Any]]:
    """The JSON events in SSE frames (one upstream read may hold several); DONE skipped."""
    found = []
    for part in frames:
        for event in part.split(b"\n\n"):
            if event.startswith(b"data: {"):
                try:
                    data = orjson.loads(event[6:])
                except orjson.JSONDecodeError:
                    continue
                if isinstance(data, dict):
                    found.append(data)
    return found


def recorded_answer(endpoint: str, parsed: Any) -> Any:
    """What the record keeps of a complete answer: embeddings' vectors are bulky and say
    nothing to an auditor, so their count and size; the rest as is."""
    if endpoint != "embeddings":
        return parsed
    if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), list):
        return parsed
    data = []
    for item in parsed["data"]:
        if isinstance(item, dict) and "embedding" in item:
            vector = item["embedding"]
            item = {**item, "embedding": f"<{len(vector)} values>"}
        data.append(item)
    return {**parsed, "data": data}


def parse_frames(frames: list[bytes]) -> tuple[str, str]:
    """The text and the tool calls' names and arguments in SSE chunks sent so far."""
    content: list[str] = []
    arguments: list[str] = []
    events = (event for part in frames for event in part.split(b"\n\n") if event)
    for frame in events:
        try:
            chunk = orjson.loads(frame[6:])
        except orjson.JSONDecodeError:
            continue
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        for choice in choices or ():
            delta = (choice or {}).get("delta") or {}
            if isinstance(delta.get("content"), str):
                content.append(delta["content"])
            for tool_call in delta.get("tool_calls") or ():
                function = (tool_call or {}).get("function") or {}
                arguments.append((function.get("name") or "") + (function.get("arguments") or ""))
    return "".join(content), "".join(arguments)
