"""The upstream HTTP client: POST a body, read the answer whole or as it arrives.

`client(...)` makes one for the running event loop. Two implementations behind one
interface (`base.Client`, `base.Response`, the errors of `base`): `lean`, home-made
on httptools (the default), and `aio`, aiohttp's client; `MESHGATE_HTTP_CLIENT`
(`lean` or `aiohttp`) picks one, for the A/B in `bench/ab.py`. An optional
`address_check` is the caller's policy on which addresses a new connection may dial;
`ssl_context` (see `trust.tls_context`) whom to trust and which client certificate to show;
`proxies` (see `proxy.Proxies`) which egress proxy each origin goes through. All are fixed
when a client is made, never looked up per request.
"""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING

from .base import (
    AddressCheck,
    AddressRefused,
    Client,
    ClosedBeforeAnswer,
    ConnectError,
    Headers,
    RemoteProtocolError,
    Response,
    TimeoutException,
    TransportError,
    encode_headers,
)
from .connection import HIGH_WATER
from .lean import HTTPClient
from .probe import PeerCertificate, peer_certificate
from .proxy import Proxies, Proxy
from .trust import cause, tls_context

if TYPE_CHECKING:
    from .aio import AiohttpClient

IMPLEMENTATIONS = ("lean", "aiohttp")


def client(
    *,
    timeout: float = 60.0,
    connect_timeout: float = 10.0,
    max_connections: int = 1000,
    keepalive_expiry: float = 30.0,
    user_agent: str = "meshgate",
    ssl_context: ssl.SSLContext | None = None,
    address_check: AddressCheck | None = None,
    proxies: Proxies | None = None,
    implementation: str | None = None,
) -> Client:
    """A client of the chosen implementation (default: MESHGATE_HTTP_CLIENT, else lean)."""
    kind = implementation or os.environ.get("MESHGATE_HTTP_CLIENT") or "lean"
    if kind not in IMPLEMENTATIONS:
        raise ValueError(f"unknown HTTP client implementation {kind!r}")
    make: type[HTTPClient] | type[AiohttpClient] = HTTPClient
    if kind == "aiohttp":
        from .aio import AiohttpClient as make
    return make(
        timeout=timeout,
        connect_timeout=connect_timeout,
        max_connections=max_connections,
        keepalive_expiry=keepalive_expiry,
        user_agent=user_agent,
        ssl_context=ssl_context,
        address_check=address_check,
        proxies=proxies,
    )


__all__ = [
    "HIGH_WATER",
    "IMPLEMENTATIONS",
    "AddressCheck",
    "AddressRefused",
    "Client",
    "ClosedBeforeAnswer",
    "ConnectError",
    "HTTPClient",
    "Headers",
    "PeerCertificate",
    "Proxies",
    "Proxy",
    "RemoteProtocolError",
    "Response",
    "TimeoutException",
    "TransportError",
    "cause",
    "client",
    "encode_headers",
    "peer_certificate",
    "tls_context",
]
