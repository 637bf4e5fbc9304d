"""Database work from threads that outlive requests: a broken connection is closed, not kept.

Django closes unusable connections at a request's start and end (`request_started`,
`request_finished`). The gateway's `/v1/` path and its background tasks run outside
that cycle, in long-lived threads (asgiref's thread for `sync_to_async`, the version
check's thread), so a connection broken by a database restart or a network cut would
stay there, failing every lookup for as long as the process lives. `run_guarded` runs a
function in the calling thread so that it never does: a connection that failed is
closed at once, a stale one is tried again once on a fresh connection (a restart that
is over costs nobody a call), and a database still away raises `DatabaseUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


BUSY_SECONDS = 2.0  # how long a read waits for SQLite's lock before it counts as away


class DatabaseUnavailable(Exception):
    """The database could not be reached (the caller answers 503)."""


def _lost() -> tuple[type[BaseException], ...]:
    import psycopg

    return (OperationalError, InterfaceError, psycopg.OperationalError, psycopg.InterfaceError)


def close_quietly() -> None:
    """Close this thread's connection, whatever state it is in."""
    try:
        connection.close()
    except Exception:
        logger.debug("database: closing a broken connection failed", exc_info=True)
        connection.connection = None


def _busy(exc: BaseException) -> bool:
    """SQLite's lock held by another connection of this process: busy, not lost. (A file
    database waits for it up to its busy timeout; a shared-cache one answers at once.)"""
    return connection.vendor == "sqlite" and "locked" in str(exc)


def run_guarded(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`function(*args, **kwargs)` in this thread; DatabaseUnavailable if the database is away."""
    lost = _lost()
    if connection.in_atomic_block:  # a caller's transaction: not ours to close or retry
        return function(*args, **kwargs)
    retried, busy_until = False, 0.0
    while True:
        reused = connection.connection is not None
        try:
            connection.close_if_unusable_or_obsolete()
            return function(*args, **kwargs)
        except lost as exc:
            if _busy(exc):
                now = time.monotonic()
                busy_until = busy_until or now + BUSY_SECONDS
                if now < busy_until:
                    time.sleep(0.005)  # a writer's transaction is short: wait, keep the link
                    continue
            close_quietly()
            if reused and not retried:
                retried = True
                continue  # a connection from before a restart: once more on a new one
            logger.warning("database: unreachable (%s)", type(exc).__name__)
            raise DatabaseUnavailable from None


async def lookup(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)` in asgiref's database thread, guarded (`run_guarded`) and
    bounded by MESHGATE_AUDIT_WAIT_SECONDS: DatabaseUnavailable if the database is away or does
    not answer in time, so a database that stopped answering costs a call a refusal, not a hang.
    """
    try:
        async with asyncio.timeout(settings.MESHGATE_AUDIT_WAIT_SECONDS):
            return await sync_to_async(run_guarded)(function, *args, **kwargs)
    except TimeoutError:
        raise DatabaseUnavailable from None
