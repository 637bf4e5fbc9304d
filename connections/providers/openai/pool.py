"""Pooled HTTP clients for the hot path."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

from meshsite.lib import http

from ..addresses import checked_addresses
from ..base import ConnectionConfig, ProviderError
from ..transport import Transport, transport_for

T = TypeVar("T")


class PooledClients:
    """One pooled upstream client (`meshsite.lib.http`) per event loop (its connections
    belong to their loop).

    The gateway has one loop per process, so one client; code that runs calls in
    short-lived loops (`async_to_sync`, tests) gets its own client there, without
    churning the long-lived one. Entries go when their loop is collected.
    """

    def __init__(self, config: ConnectionConfig) -> None:
        self._config = config
        # Proxy and trust are decided here, once per connection version, never per request.
        # Unusable settings (a proxy variable that is no http:// URL, a key that does not
        # fit its certificate) fail every call with a clear error, never go around them.
        self._unusable: ProviderError | None = None
        try:
            self.transport: Transport = transport_for(config)
        except ValueError as exc:
            self._unusable = ProviderError(
                f"This connection's network settings cannot be used: {exc}.",
                status=502,
                code="invalid_connection",
            )
            self.transport = Transport(http.tls_context(), http.Proxies.none())
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, http.Client] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> http.Client:
        if self._unusable is not None:
            raise self._unusable
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
                ssl_context=self.transport.ssl_context,
                proxies=self.transport.proxies,
            )
        return client

    def run(self, work: Callable[[http.Client], Awaitable[T]], url: str) -> T:
        """Off the hot path (Test connection, Discover: sync code, no loop running): `work`
        with this connection's own client (same proxy, trust, address rules as calls), on a
        loop of its own. A TLS failure's message names the certificate the server showed."""

        async def go() -> T:
            try:
                return await work(self.get())
            except ProviderError as exc:
                if exc.cause.startswith("tls:") and url.startswith("https:"):
                    exc.message = await self._with_certificate(exc.message, url)
                    exc.args = (exc.message,)
                raise
            finally:
                await self.aclose()

        return asyncio.run(go())

    async def _with_certificate(self, message: str, url: str) -> str:
        try:
            found = await http.peer_certificate(
                url,
                proxies=self.transport.proxies,
                address_check=checked_addresses,
                timeout=min(10.0, self._config.timeout_seconds),
            )
        except (TimeoutError, OSError, http.TransportError, ValueError):
            return message
        return f"{message.rstrip('.')}: {found.describe()}." if found else message

    async def aclose(self) -> None:
        """Close the clients of the running loop; those of other loops cannot be awaited here."""
        loop = asyncio.get_running_loop()
        client = self._clients.pop(loop, None)
        if client is not None:
            await client.aclose()
