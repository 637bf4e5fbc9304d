"""Database reads on the `/v1/` path: off the loop, bounded in time, 503 when the database is away.

Every read the gateway makes on a call's behalf (a key, the catalog, a user's groups,
quota definitions) goes through `db_lookup`: it runs in asgiref's thread for
`sync_to_async` through `connections.dbguard.run_guarded`, so a connection broken by
an outage is closed there and the next read reconnects, and it waits at most
MESHGATE_AUDIT_WAIT_SECONDS: a database that stopped answering costs a call a 503,
not a hang. Reads are cache misses, not steady-state work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from connections.dbguard import DatabaseUnavailable, run_guarded

from .errors import database_unavailable


async def db_lookup(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)` in the database thread; GatewayError 503 if it is away."""
    try:
        async with asyncio.timeout(settings.MESHGATE_AUDIT_WAIT_SECONDS):
            return await sync_to_async(run_guarded)(function, *args, **kwargs)
    except (DatabaseUnavailable, TimeoutError):
        raise database_unavailable() from None
