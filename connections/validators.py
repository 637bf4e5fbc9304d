"""Validation of upstream base URLs: no metadata endpoints, no surprise private hosts."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

# Cloud metadata services: never a valid upstream, whatever the settings.
_METADATA_NETWORKS = [
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud metadata
]
_METADATA_HOSTNAMES = {"metadata.google.internal", "metadata", "instance-data"}


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        # Unresolvable now (DNS may be internal to production): judged on the name only.
        return []
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def validate_base_url(url: str, *, allow_private: bool | None = None) -> None:
    """Raise ValidationError unless `url` is a safe upstream base URL."""
    if allow_private is None:
        allow_private = settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise ValidationError("The base URL must start with http:// or https://.", code="scheme")
    host = parts.hostname
    if not host:
        raise ValidationError("The base URL has no host.", code="host")
    if parts.username or parts.password:
        raise ValidationError(
            "Put credentials in the connection's secret fields, not in the URL.", code="userinfo"
        )
    if host.lower().rstrip(".") in _METADATA_HOSTNAMES:
        raise ValidationError("Cloud metadata addresses are never allowed.", code="metadata")
    for address in _addresses(host):
        mapped = getattr(address, "ipv4_mapped", None) or address
        if any(mapped in network for network in _METADATA_NETWORKS):
            raise ValidationError(
                "Link-local and cloud metadata addresses are never allowed.", code="metadata"
            )
        if not allow_private and (
            mapped.is_private or mapped.is_loopback or mapped.is_reserved or mapped.is_unspecified
        ):
            raise ValidationError(
                "Private and loopback addresses are refused unless "
                "MESHGATE_ALLOW_PRIVATE_UPSTREAMS is on.",
                code="private",
            )
