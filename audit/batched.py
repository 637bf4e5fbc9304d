"""Writes other apps ride on the audit writer's batches, without audit knowing their tables.

An app registers a `BatchedWrite` under a name (at start-up, in its AppConfig.ready)
and hands it items with `writer.later(name, item)`: fire and forget, no query on the
calling path. The writer collects the items waiting in one batch or group, asks the
write for its rows (`rows`, where it may merge items: one row per key, say) and runs
its statement once per row, in the same transaction as the records beside it. What
is written where is the registering app's: audit sees a statement and parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class BatchedWrite(Protocol):
    def statement(self, vendor: str) -> str:
        """One SQL statement with %s placeholders, for `vendor` ("postgresql", "sqlite")."""
        ...

    def rows(self, items: Sequence[Any], vendor: str) -> list[list[Any]]:
        """The statement's parameter rows for these items, as `vendor`'s driver takes
        them (datetimes, ints, strings)."""
        ...


_registered: dict[str, BatchedWrite] = {}


def register(name: str, write: BatchedWrite) -> None:
    _registered[name] = write


def registered() -> dict[str, BatchedWrite]:
    return dict(_registered)


def get(name: str) -> BatchedWrite:
    return _registered[name]


def rows_by_write(items: Sequence[tuple[str, Any]], vendor: str) -> list[tuple[str, list[Any]]]:
    """(name, parameter row) for (name, item) pairs, each write's items merged by it."""
    grouped: dict[str, list[Any]] = {}
    for name, item in items:
        grouped.setdefault(name, []).append(item)
    return [(name, row) for name, found in grouped.items() for row in get(name).rows(found, vendor)]
