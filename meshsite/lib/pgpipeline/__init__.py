"""PostgreSQL statements pipelined from an asyncio loop: groups of prepared statements,
each group one transaction and one round trip, answered in order.

`pipeline(...)` makes one: `libpq` (home-made, on libpq's pipeline mode, the default)
or `psycopg` (psycopg's AsyncConnection in pipeline mode), chosen by
MESHGATE_AUDIT_PIPELINE for the A/B in `bench/ab.py`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from .base import GroupCallback, Params, Pipeline, StatementResult, numbered

IMPLEMENTATIONS = ("libpq", "psycopg")


def pipeline(
    loop: asyncio.AbstractEventLoop,
    on_group: GroupCallback,
    on_progress: Callable[[], None],
    on_broken: Callable[[BaseException], None],
    connect_seconds: float = 10.0,
    implementation: str | None = None,
) -> Pipeline:
    kind = implementation or os.environ.get("MESHGATE_AUDIT_PIPELINE") or "libpq"
    if kind == "psycopg":
        from .aio import PsycopgPipeline

        return PsycopgPipeline(loop, on_group, on_progress, on_broken, connect_seconds)
    if kind != "libpq":
        raise ValueError(f"unknown pipeline implementation {kind!r}")
    from .libpq import LibpqPipeline

    return LibpqPipeline(loop, on_group, on_progress, on_broken, connect_seconds)


__all__ = [
    "IMPLEMENTATIONS",
    "GroupCallback",
    "Params",
    "Pipeline",
    "StatementResult",
    "numbered",
    "pipeline",
]
