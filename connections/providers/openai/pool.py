"""Pooled HTTP clients for the hot path."""

from __future__ import annotations

import asyncio
import weakref

import httpx

from ..base import ConnectionConfig


class PooledClients:
    """One pooled `httpx.AsyncClient` per event loop (a client cannot cross loops).

    The gateway has one loop per process, so one client; code that runs calls in
    short-lived loops (`async_to_sync`, tests) gets its own client there, without
    churning the long-lived one. Entries go when their loop is collected.
    """

    def __init__(self, config: ConnectionConfig) -> None:
        self._config = config
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            timeout = self._config.timeout_seconds
            max_connections = int(self._config.options.get("max_connections", 1000))
            client = self._clients[loop] = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
                # Sized for hundreds of concurrent streams: a smaller pool would queue them.
                limits=httpx.Limits(
                    max_connections=max_connections,
                    max_keepalive_connections=min(max_connections, 256),
                    keepalive_expiry=30,
                ),
                http1=True,
                http2=False,
                follow_redirects=False,
                trust_env=False,
            )
        return client

    async def aclose(self) -> None:
        """Close the clients of the running loop; those of other loops cannot be awaited here."""
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()
