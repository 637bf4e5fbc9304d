"""Which door serves which `/v1/` path, besides the OpenAI door's own (`doors.ROUTES`).

`DOORS` are the paths whose calls run the pipeline (`gateway.asgi` translates in and
out through the door); `side` serves a door's other paths that call no model
(`/v1/messages/count_tokens`, `GET`/`DELETE /v1/responses/{id}`), authenticated as a
call is, refused in the door's error shape, and recorded only when refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .call import Call, Reply
from .doors import Door
from .doors_completions import CompletionsDoor
from .doors_messages import CountTokensDoor, MessagesDoor
from .doors_responses import ResponsesDoor
from .responses_store import StoredDoor

DOORS: dict[str, Door] = {
    "/v1/completions": CompletionsDoor(),
    "/v1/messages": MessagesDoor(),
    "/v1/responses": ResponsesDoor(),
}
SIDE: dict[str, Door] = {
    "/v1/messages/count_tokens": CountTokensDoor(),
}

STORED = StoredDoor()


def side_door(path: str) -> Door | None:
    """The door of a side path, or None."""
    if path.startswith("/v1/responses/"):
        return STORED
    return SIDE.get(path)


async def side(
    call: Call, method: str, path: str, read: Callable[[], Awaitable[dict[str, Any]]]
) -> Reply:
    assert call.door is not None
    return await call.door.side(call, method, path, read)
