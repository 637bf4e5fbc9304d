"""PostgreSQL statements pipelined from an asyncio loop: groups of prepared statements,
each group one transaction and one round trip, answered in order.

`pipeline(...)` makes one: `libpq` (home-made, on libpq's pipeline mode, the default)
or `psycopg` (psycopg's AsyncConnection in pipeline mode), chosen by
MESHGATE_AUDIT_PIPELINE for the A/B in `bench/ab.py`.
"""

from __future__ import annotations

import asyncio
import os

from .base import (
    BrokenCallback,
    Factory,
    GroupCallback,
    Params,
    Pipeline,
    ProgressCallback,
    StatementResult,
    numbered,
)

IMPLEMENTATIONS = ("libpq", "psycopg")


def pipeline(
    loop: asyncio.AbstractEventLoop,
    on_group: GroupCallback,
    on_progress: ProgressCallback,
    on_broken: BrokenCallback,
    connect_seconds: float = 10.0,
    implementation: str | None = None,
) -> Pipeline:
    kind = implementation or os.environ.get("MESHGATE_AUDIT_PIPELINE") or "libpq"
    make: Factory
    if kind == "psycopg":
        from .aio import PsycopgPipeline

        make = PsycopgPipeline
    elif kind == "libpq":
        from .libpq import LibpqPipeline

        make = LibpqPipeline
    else:
        raise ValueError(f"unknown pipeline implementation {kind!r}")
    return make(loop, on_group, on_progress, on_broken, connect_seconds)


__all__ = [
    "IMPLEMENTATIONS",
    "GroupCallback",
    "Params",
    "Pipeline",
    "StatementResult",
    "numbered",
    "pipeline",
]
