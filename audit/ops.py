"""What the audit writers pass around: one write (`Op`) and the error a call gets."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any


class AuditUnavailable(Exception):
    """The record could not be written: the call must not go upstream."""


@dataclass
class Op:
    kind: str  # "insert", "update", "batched" or "flush"
    fields: dict[str, Any]
    pk: int | None = None
    future: asyncio.Future | None = None
    loop: asyncio.AbstractEventLoop | None = None
    error: BaseException | None = field(default=None, repr=False)
    done: threading.Event | None = None  # for a sync caller waiting (`drain`)
    alone: bool = False  # the loop writer retries it in a group of its own
    # Sent on a connection that broke before its answer came: PostgreSQL may have
    # committed it. Its retry then takes the committed record instead of failing on it.
    resumed: bool = False


def settle(op: Op, pk: int) -> None:
    """An insert committed: its call goes on with the record's id."""
    op.pk = pk
    if op.future is not None and not op.future.done():
        op.future.set_result(pk)


def fail(op: Op) -> None:
    """An insert that cannot be written: its call gets AuditUnavailable."""
    if op.future is not None and not op.future.done():
        op.future.set_exception(AuditUnavailable())
