"""Which network addresses a provider call may connect to, checked on every new connection.

The same rules as when a connection is saved (`connections.validators`): link-local and
cloud metadata addresses never; private, loopback, reserved and unspecified ones only with
MESHGATE_ALLOW_PRIVATE_UPSTREAMS. Checked again where the TCP connection is opened, on
the addresses the name resolves to *then*, so a host name that later resolves elsewhere
(DNS rebinding) or a connection saved under a looser setting is refused before a byte
is sent. Our own pooled client checks each new connection (`http.HTTPClient`'s
`address_check`); the SDK clients used off the hot path get the same check through
`guarded_httpx_client` (openai SDK) and `guard_botocore_client` (boto3).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from django.conf import settings

from meshsite.lib.http import AddressRefused

# Cloud metadata services: never a valid upstream, whatever the settings.
METADATA_NETWORKS = [
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
]
METADATA_REFUSED = "Link-local and cloud metadata addresses are never allowed."
PRIVATE_REFUSED = (
    "Private and loopback addresses are refused unless MESHGATE_ALLOW_PRIVATE_UPSTREAMS is on."
)


def address_refusal(address: str, *, allow_private: bool | None = None) -> str | None:
    """Why `address` (an IP, as resolved) may not be connected to, or None if it may."""
    if allow_private is None:
        allow_private = settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return "The provider's address could not be read."
    ip = getattr(ip, "ipv4_mapped", None) or ip
    if any(ip in network for network in METADATA_NETWORKS):
        return METADATA_REFUSED
    if not allow_private and (
        ip.is_private or ip.is_loopback or ip.is_reserved or ip.is_unspecified
    ):
        return PRIVATE_REFUSED
    return None


def checked_addresses(infos: list[tuple]) -> list[tuple]:
    """`getaddrinfo` results, all of them allowed; AddressRefused if any one is not (a name
    that resolves to one public and one private address is not half trusted)."""
    for info in infos:
        reason = address_refusal(info[4][0])
        if reason is not None:
            raise AddressRefused(reason)
    if not infos:
        raise AddressRefused("The provider's host name resolves to no address.")
    return infos


def resolve_checked(host: str, port: int) -> list[tuple]:
    """Blocking: for the SDK clients' connections, made in worker threads."""
    return checked_addresses(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))


def refused_cause(exc: BaseException | None) -> AddressRefused | None:
    """The AddressRefused behind an SDK's exception (its cause, context or wrapped error)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, AddressRefused):
            return exc
        wrapped = (getattr(exc, "kwargs", None) or {}).get("error")  # botocore wraps it
        exc = wrapped if isinstance(wrapped, BaseException) else exc.__cause__ or exc.__context__
        seen += 1
    return None


# --- the openai SDK (httpx, httpcore) --------------------------------------------------------


def guarded_httpx_client(**kwargs: Any):
    """An httpx.Client whose every new TCP connection goes to checked addresses only."""
    import httpcore
    import httpx

    class CheckedBackend(httpcore.SyncBackend):
        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            try:
                infos = resolve_checked(host, port)
            except AddressRefused as exc:  # a connection error to the SDK; its cause says why
                raise httpcore.ConnectError(str(exc)) from exc
            last: Exception | None = None
            for info in infos:
                try:
                    return super().connect_tcp(
                        info[4][0], port, timeout, local_address, socket_options
                    )
                except httpcore.ConnectError as exc:
                    last = exc
            raise last or httpcore.ConnectError("no address")

    transport = httpx.HTTPTransport()
    # httpx takes no network backend; its pool does (TLS still names the host: SNI, certificate).
    transport._pool._network_backend = CheckedBackend()
    return httpx.Client(transport=transport, **kwargs)


# --- boto3 (botocore, urllib3) ---------------------------------------------------------------


def _checked_connection_class(base: type) -> type:
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
    from urllib3.util import connection

    class Checked(base):
        def _new_conn(self) -> socket.socket:
            last: Exception | None = None
            for info in resolve_checked(self._dns_host, self.port):
                try:
                    return connection.create_connection(
                        (info[4][0], self.port),
                        self.timeout,
                        source_address=self.source_address,
                        socket_options=self.socket_options,
                    )
                except TimeoutError as exc:
                    raise ConnectTimeoutError(self, "Connection timed out.") from exc
                except OSError as exc:
                    last = exc
            raise NewConnectionError(self, f"Failed to establish a new connection: {last}")

    Checked.__name__ = "Checked" + base.__name__
    return Checked


def guard_botocore_client(client: Any) -> Any:
    """Make a boto3 client's every new connection go to checked addresses only."""
    from botocore.awsrequest import AWSHTTPConnectionPool, AWSHTTPSConnectionPool

    pools = {}
    for scheme, pool in (("http", AWSHTTPConnectionPool), ("https", AWSHTTPSConnectionPool)):
        pools[scheme] = type(
            "Checked" + pool.__name__,
            (pool,),
            {"ConnectionCls": _checked_connection_class(pool.ConnectionCls)},
        )
    # botocore takes no connection class; its session's pool manager does (no proxies here).
    session = client._endpoint.http_session
    session._pool_classes_by_scheme = pools
    session._manager.pool_classes_by_scheme = pools
    return client
