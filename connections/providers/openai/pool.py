"""Pooled HTTP clients for the hot path."""

from __future__ import annotations

import asyncio
import weakref

from meshsite.lib import http

from ..addresses import checked_addresses
from ..base import ConnectionConfig


class PooledClients:
    """One pooled upstream client (`meshsite.lib.http`) per event loop (its connections
    belong to their loop).

    The gateway has one loop per process, so one client; code that runs calls in
    short-lived loops (`async_to_sync`, tests) gets its own client there, without
    churning the long-lived one. Entries go when their loop is collected.
    """

    def __init__(self, config: ConnectionConfig) -> None:
        self._config = config
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, http.Client] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> http.Client:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            timeout = self._config.timeout_seconds
            client = self._clients[loop] = http.client(
                timeout=timeout,
                connect_timeout=min(10.0, timeout),
                # Sized for hundreds of concurrent streams: a smaller pool would queue them.
                max_connections=int(self._config.options.get("max_connections", 1000)),
                keepalive_expiry=30.0,
                # Every new TCP connection: the addresses its host resolves to, then.
                address_check=checked_addresses,
            )
        return client

    async def aclose(self) -> None:
        """Close the clients of the running loop; those of other loops cannot be awaited here."""
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()
