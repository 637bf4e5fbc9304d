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
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


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


def run_guarded(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`function(*args, **kwargs)` in this thread; DatabaseUnavailable if the database is away."""
    lost = _lost()
    if connection.in_atomic_block:  # a caller's transaction: not ours to close or retry
        return function(*args, **kwargs)
    for attempt in (1, 2):
        reused = connection.connection is not None
        try:
            connection.close_if_unusable_or_obsolete()
            return function(*args, **kwargs)
        except lost as exc:
            close_quietly()
            if attempt == 1 and reused:
                continue  # a connection from before a restart: once more on a new one
            logger.warning("database: unreachable (%s)", type(exc).__name__)
            raise DatabaseUnavailable from None
    raise AssertionError("unreachable")


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
