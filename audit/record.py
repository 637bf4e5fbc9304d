"""The audit façade: a call's record, from the call itself.

The gateway hands over its call; this module alone knows the record's shape (which
fields an opening and a completion write, `COMPLETION_FIELDS`), what a call cost
(`audit.cost`), what of its payloads is kept (`audit.redaction`) and which writer takes
it (`audit.writer`: the writer thread, or the loop writer on the gateway's loop):

- `open(call)`: queue the record before the upstream call; `Opening.wait` awaits it;
- `complete(call)`: write how it ended; a record whose opening failed goes to the spool
  whole, one still being opened is completed once it lands;
- `refuse(call)`: the one write of a call refused before its record was opened.

What it reads of a call is the `Recorded` protocol below (audit does not import the gateway).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from django.conf import settings

from . import redaction
from .cost import call_cost
from .fields import COMPLETION_FIELDS
from .outcome import Outcome
from .writer import AuditUnavailable, writer

logger = logging.getLogger(__name__)


class Who(Protocol):
    @property
    def user_id(self) -> int: ...
    @property
    def api_key_id(self) -> int | None: ...
    @property
    def api_key_prefix(self) -> str: ...
    @property
    def department_id(self) -> int | None: ...
    @property
    def purpose(self) -> str: ...


class Priced(Protocol):
    """An LLM on a connection, with its prices (USD per million tokens) and payload policy."""

    @property
    def llm_id(self) -> int: ...
    @property
    def connection_id(self) -> int: ...
    @property
    def input_price(self) -> Decimal: ...
    @property
    def output_price(self) -> Decimal: ...
    @property
    def cached_input_price(self) -> Decimal: ...
    @property
    def payload_policy(self) -> str: ...


class Counted(Protocol):
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...
    @property
    def estimated(self) -> bool: ...


class Tried(Protocol):
    @property
    def items(self) -> list[dict[str, Any]]: ...


class Recorded(Protocol):
    """What the record is written from (`gateway.call.Call` is one)."""

    @property
    def request_id(self) -> str: ...
    @property
    def recorded_endpoint(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def client_ip(self) -> str | None: ...
    @property
    def user_agent(self) -> str: ...
    @property
    def body(self) -> dict[str, Any] | None: ...
    @property
    def streamed(self) -> bool: ...
    @property
    def model_requested(self) -> str: ...
    @property
    def principal(self) -> Who | None: ...
    @property
    def alias_name(self) -> str: ...
    @property
    def policy(self) -> str: ...
    @property
    def first_target(self) -> Priced | None: ...
    @property
    def target(self) -> Priced | None: ...
    @property
    def attempts(self) -> Tried | None: ...
    @property
    def usage(self) -> Counted | None: ...
    @property
    def response_body(self) -> Any: ...
    @property
    def first_token_at(self) -> datetime | None: ...
    @property
    def outcome(self) -> Outcome: ...
    @property
    def status(self) -> int: ...
    @property
    def error_message(self) -> str: ...
    @property
    def cost(self) -> Decimal | None: ...
    @property
    def opening(self) -> Opening | None: ...

    def latency_ms(self) -> int: ...


class Opening:
    """A record being opened: its fields (kept for the spool) and the writer's future."""

    __slots__ = ("fields", "future", "record_id")

    def __init__(self, fields: dict[str, Any], future: asyncio.Future[int]) -> None:
        self.fields = fields
        self.future = future
        self.record_id: int | None = None

    async def wait(self, timeout: float) -> int:
        """The record's id once written; AuditUnavailable if the database refused it,
        TimeoutError past `timeout` (the write goes on: `complete` finishes it)."""
        # asyncio.timeout, not wait_for: on 3.11 wait_for can drop a cancel that arrives
        # in the turn the record lands, and the call would then go upstream.
        async with asyncio.timeout(timeout):
            self.record_id = await asyncio.shield(self.future)
        return self.record_id


def cost(call: Recorded) -> Decimal:
    """What the call cost, from the answering target's prices and the call's usage."""
    target, usage = call.target, call.usage
    if target is None or usage is None:
        return Decimal(0)
    return call_cost(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cached_tokens=usage.cached_tokens,
        input_price=target.input_price,
        output_price=target.output_price,
        cached_input_price=target.cached_input_price,
    )


def opening_fields(call: Recorded) -> dict[str, Any]:
    """The fields of a record opened before its call goes upstream."""
    who, first = call.principal, call.first_target
    return {
        "request_id": call.request_id,
        "started_at": call.started_at,
        "user_id": who.user_id if who else None,
        "api_key_id": who.api_key_id if who else None,
        "api_key_prefix": who.api_key_prefix if who else "",
        "department_id": who.department_id if who else None,
        "purpose": who.purpose if who else "",
        "endpoint": call.recorded_endpoint[:40],
        "streamed": call.streamed,
        "model_requested": call.model_requested,
        "alias_name": call.alias_name,
        "client_ip": call.client_ip,
        "user_agent": (call.user_agent or "")[:512],
        "request_body": redaction.apply_policy(call.policy, call.body),
        # The first target's: an unchanged value on completion lets PostgreSQL update the
        # row in place (a HOT update, no index entries).
        "llm_id": first.llm_id if first else None,
        "connection_id": first.connection_id if first else None,
    }


def closing_fields(call: Recorded, ended_at: datetime) -> dict[str, Any]:
    """The fields of its completion (every one of COMPLETION_FIELDS)."""
    target, first = call.target, call.first_target
    usage = call.usage
    first_token_at = call.first_token_at
    placed = target or first
    return {
        "outcome": call.outcome.value,
        "status_code": call.status,
        "error_message": call.error_message[:2000],
        "first_token_at": first_token_at,
        "ended_at": ended_at,
        "latency_ms": call.latency_ms(),
        "ttft_ms": (
            int((first_token_at - call.started_at).total_seconds() * 1000)
            if first_token_at
            else None
        ),
        "attempts": call.attempts.items if call.attempts else [],
        "llm_id": placed.llm_id if placed else None,
        "connection_id": placed.connection_id if placed else None,
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "cached_tokens": usage.cached_tokens if usage else 0,
        "tokens_estimated": usage.estimated if usage else False,
        "cost": call.cost if call.cost is not None else cost(call),
        "input_price": target.input_price if target else None,
        "output_price": target.output_price if target else None,
        "cached_input_price": target.cached_input_price if target else None,
        "response_body": (
            redaction.apply_policy(target.payload_policy, call.response_body) if target else None
        ),
    }


def open(call: Recorded) -> Opening:
    """Queue the call's record now, before its upstream call; await `Opening.wait`."""
    fields = opening_fields(call)
    return Opening(fields, writer.insert_soon(fields))


def complete(call: Recorded, ended_at: datetime) -> None:
    """Write how the call ended. Not awaited: the answer does not wait for the commit."""
    opening = call.opening
    if opening is None:
        return
    fields = closing_fields(call, ended_at)
    if opening.record_id is not None:
        writer.complete(opening.record_id, fields)
    elif opening.future.done():
        _completed(opening, fields, opening.future)
    else:  # still being written (the call stopped waiting): completed once it lands
        opening.future.add_done_callback(lambda done: _completed(opening, fields, done))


def _completed(opening: Opening, fields: dict[str, Any], done: asyncio.Future[int]) -> None:
    if not done.cancelled() and done.exception() is None:
        opening.record_id = done.result()
        writer.complete(opening.record_id, fields)
    else:
        # The database is away: the whole record waits in the spool until it is back.
        writer.spool({**opening.fields, **fields})


async def refuse(call: Recorded, ended_at: datetime) -> None:
    """Write the complete record of a call refused before its record was opened (one write),
    waiting for it at most MESHGATE_AUDIT_WAIT_SECONDS."""
    fields = opening_fields(call)
    fields.update(closing_fields(call, ended_at))
    inserted = writer.insert_soon(fields)
    try:
        async with asyncio.timeout(settings.MESHGATE_AUDIT_WAIT_SECONDS):
            await asyncio.shield(inserted)
    except AuditUnavailable:
        # The database is away: the record waits in the spool until it is back.
        writer.spool(fields)
    except TimeoutError:
        # Still queued: written when the database answers again, or spooled if it fails.
        logger.error("audit: the refusal of request %s is not recorded yet", call.request_id)
        inserted.add_done_callback(lambda done: _spool_if_failed(done, fields))


def _spool_if_failed(done: asyncio.Future[int], fields: dict[str, Any]) -> None:
    if not done.cancelled() and done.exception() is not None:
        writer.spool(fields)


__all__ = [
    "COMPLETION_FIELDS",
    "AuditUnavailable",
    "Opening",
    "Recorded",
    "closing_fields",
    "complete",
    "cost",
    "open",
    "opening_fields",
    "refuse",
]
