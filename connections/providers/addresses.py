"""Which network addresses a provider call may connect to, checked on every new connection.

The same rules as when a connection is saved (`connections.validators`): link-local and
cloud metadata addresses never; private, loopback, reserved and unspecified ones only with
MESHGATE_ALLOW_PRIVATE_UPSTREAMS. Checked again where the TCP connection is opened, on
the addresses the name resolves to *then*, so a host name that later resolves elsewhere
(DNS rebinding) or a connection saved under a looser setting is refused before a byte
is sent. Our own pooled client checks each new connection (its `address_check`); calls,
Test connection and Discover all go through it (through a proxy, the upstream's addresses
are checked, not the proxy's).
"""

from __future__ import annotations

import ipaddress
import socket

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
