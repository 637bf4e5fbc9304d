"""The PostgreSQL pipeline's interface: groups of prepared statements, answered in order.

A *group* is some statements and a Sync: one implicit transaction, one commit, one
round trip. The owner sends groups (`send_group`) while `can_send`; each group's
results come back, in order, to its `on_group` callback, then `on_progress` tells it
that answers arrived (time to send what waits). If the connection breaks, `on_broken`
gets the error once and the pipeline is closed: what was in flight is unanswered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Params = Sequence[bytes | None]  # text-format parameters; None is NULL


@dataclass(frozen=True, slots=True)
class StatementResult:
    ok: bool
    value: bytes | None = None  # the first column of the first row, if the statement returns one
    error: str = ""  # SQLSTATE and primary message, never DETAIL (it may quote values)


GroupCallback = Callable[[list[StatementResult]], None]
ProgressCallback = Callable[[], None]
BrokenCallback = Callable[[BaseException], None]


class Pipeline(Protocol):
    @property
    def in_flight(self) -> int:
        """Groups sent and not yet answered."""
        ...

    @property
    def can_send(self) -> bool:
        """Connected, and not waiting for the socket to take earlier output."""
        ...

    async def connect(
        self, params: dict[str, Any], setup: Sequence[str], prepared: dict[str, str]
    ) -> None:
        """Connect (libpq keyword parameters), run `setup`, prepare `prepared` (name: SQL
        with %s placeholders); raise ConnectionError if any of it fails."""
        ...

    def send_group(self, statements: Sequence[tuple[str, Params]]) -> None:
        """Send prepared statements (name, parameters) as one group."""
        ...

    def close(self) -> None:
        """Close the connection now, unanswered groups unanswered (no callback)."""
        ...

    @property
    def backend_pid(self) -> int: ...


class PipelineBase:
    """What both implementations (`libpq.py`, `aio.py`) share: the loop they run on, the
    owner's callbacks, how long connecting may take, and the errors they raise alike."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_group: GroupCallback,
        on_progress: ProgressCallback,
        on_broken: BrokenCallback,
        connect_seconds: float = 10.0,
    ) -> None:
        self.loop = loop
        self.connect_seconds = connect_seconds
        self._on_group = on_group
        self._on_progress = on_progress
        self._on_broken = on_broken
        self._init()

    def _init(self) -> None:
        """The implementation's own state, as a new pipeline starts."""

    @staticmethod
    def closed_error() -> ConnectionError:
        return ConnectionError("the pipeline is closed")

    @staticmethod
    def connect_error(reason: str) -> ConnectionError:
        return ConnectionError(f"cannot connect to PostgreSQL: {reason}")


# How `pipeline(...)` makes either implementation.
Factory = Callable[
    [asyncio.AbstractEventLoop, GroupCallback, ProgressCallback, BrokenCallback, float], Pipeline
]


def numbered(sql: str) -> str:
    """Django's %s placeholders as PostgreSQL's $1, $2, ..."""
    parts = sql.split("%s")
    return "".join(part + f"${index}" for index, part in enumerate(parts[:-1], 1)) + parts[-1]
