"""Stored responses of the Responses door: kept off the request path, read on demand.

`keep` hands the response to the audit writer as a batched write registered here (one
INSERT with its next batch, nobody waits: no database call on the loop), and keeps it a
few seconds in this process, so a chain continued at once finds it before that write
lands. `chain` (previous_response_id) and the side paths `GET`/`DELETE
/v1/responses/{id}` read through `gateway.lookups.db_lookup` (the database thread,
bounded, 503 when away). A response is its key owner's alone: anyone else, like an
unknown or expired id, gets 404. They are kept as long as call bodies are
(MESHGATE_AUDIT_RETENTION_DAYS): older ones are not found, and `purge_expired` deletes them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import connection

from audit import batched
from audit.writer import writer as audit_writer

from .call import Call, Principal, Reply
from .doors import Door, json_reply
from .errors import GatewayError
from .lookups import db_lookup

STORED = "gateway.storedresponse"
RECENT_SECONDS = 30.0  # how long this process trusts its own copy of a response just kept
_MAX_RECENT = 1024
# id -> (kept at (monotonic), user id, response, messages)
_recent: OrderedDict[str, tuple[float, int, dict[str, Any], list[dict[str, Any]]]] = OrderedDict()


class StoredInserts:
    """INSERT INTO gateway_storedresponse, one row per response kept."""

    def statement(self, vendor: str) -> str:
        from .models import StoredResponse

        meta = StoredResponse._meta
        quote = connection.ops.quote_name
        names = ("id", "user_id", "api_key_id", "created_at", "model", "response", "messages")
        columns = ", ".join(quote(name) for name in names)  # the fields' own column names
        # Only the model's own table and column names are interpolated; values are parameters.
        values = ", ".join(["%s"] * len(names))
        return f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({values})"  # noqa: S608

    def rows(self, items: Sequence[list[Any]], vendor: str) -> list[list[Any]]:
        rows = []
        for item in items:
            row = list(item)
            if vendor == "sqlite":  # as Django's SQLite backend stores it: naive UTC text
                row[3] = str(row[3].astimezone(UTC).replace(tzinfo=None))
            rows.append(row)
        return rows


def register() -> None:
    batched.register(STORED, StoredInserts())


def keep(principal: Principal, response: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    """Store a response, fire and forget."""
    created = datetime.fromtimestamp(response["created_at"], UTC)
    row = [
        response["id"],
        principal.user_id,
        principal.api_key_id,
        created,
        str(response.get("model") or "")[:255],
        orjson.dumps(response).decode(),
        orjson.dumps(messages).decode(),
    ]
    audit_writer.later(STORED, row)
    _recent[response["id"]] = (time.monotonic(), principal.user_id, response, messages)
    while len(_recent) > _MAX_RECENT:
        _recent.popitem(last=False)


def _cutoff() -> datetime:
    return datetime.now(UTC) - timedelta(days=settings.MESHGATE_AUDIT_RETENTION_DAYS)


def _read(response_id: str, user_id: int) -> tuple[str, str] | None:
    from .models import StoredResponse

    return (
        StoredResponse.objects.filter(id=response_id, user_id=user_id, created_at__gte=_cutoff())
        .values_list("response", "messages")
        .first()
    )


def _delete(response_id: str, user_id: int) -> int:
    from .models import StoredResponse

    deleted, _ = StoredResponse.objects.filter(id=response_id, user_id=user_id).delete()
    return deleted


def not_found(response_id: object, param: str | None = None) -> GatewayError:
    shown = response_id[:100] if isinstance(response_id, str) else ""
    return GatewayError(
        404, f"Response with id '{shown}' not found.", code="not_found", param=param
    )


async def find(
    response_id: Any, user_id: int, param: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The owner's stored response and its conversation; 404 otherwise."""
    if not isinstance(response_id, str) or not response_id.startswith("resp_"):
        raise not_found(response_id, param)
    found = await db_lookup(_read, response_id, user_id)
    if found is not None:
        return orjson.loads(found[0]), orjson.loads(found[1])
    recent = _recent.get(response_id)  # kept here, its write maybe not landed yet
    if recent and recent[1] == user_id and time.monotonic() - recent[0] < RECENT_SECONDS:
        return recent[2], recent[3]
    raise not_found(response_id, param)


async def chain(response_id: Any, user_id: int) -> list[dict[str, Any]]:
    """The chat messages a response continues from (its previous response's conversation)."""
    _, messages = await find(response_id, user_id, "previous_response_id")
    return messages


def purge_expired() -> int:
    """Delete the stored responses past the retention (the daily audit task's companion)."""
    from .models import StoredResponse

    deleted, _ = StoredResponse.objects.filter(created_at__lt=_cutoff()).delete()
    return deleted


class StoredDoor(Door):
    """`GET`/`DELETE /v1/responses/{id}`, in OpenAI's shape."""

    name = "responses.stored"

    async def side(self, call: Call, method: str, path: str, read: Any) -> Reply:
        from . import stages

        if method not in ("GET", "DELETE"):
            raise GatewayError(405, "Method not allowed.", code="method_not_allowed")
        await stages.authenticate(call)
        assert call.principal is not None
        response_id = path[len("/v1/responses/") :]
        if method == "GET":
            response, _ = await find(response_id, call.principal.user_id)
            return json_reply(call.request_id, orjson.dumps(response))
        recent = _recent.get(response_id)
        if recent is not None and recent[1] == call.principal.user_id:
            del _recent[response_id]
        if not await db_lookup(_delete, response_id, call.principal.user_id):
            raise not_found(response_id)
        body = {"id": response_id, "object": "response.deleted", "deleted": True}
        return json_reply(call.request_id, orjson.dumps(body))
