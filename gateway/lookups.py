"""Database reads on the `/v1/` path: off the loop, bounded in time, 503 when the database is away.

Every read the gateway makes on a call's behalf (a key, the catalog, a user's groups,
quota definitions) goes through `db_lookup`, which is `connections.dbguard.lookup` with the
refusal in the gateway's words: it runs in asgiref's thread for
`sync_to_async` through `connections.dbguard.run_guarded`, so a connection broken by
an outage is closed there and the next read reconnects, and it waits at most
MESHGATE_AUDIT_WAIT_SECONDS: a database that stopped answering costs a call a 503,
not a hang. Reads are cache misses, not steady-state work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connections.dbguard import DatabaseUnavailable, lookup

from .errors import database_unavailable


async def db_lookup(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)` in the database thread; GatewayError 503 if it is away."""
    try:
        return await lookup(function, *args, **kwargs)
    except DatabaseUnavailable:
        raise database_unavailable() from None
