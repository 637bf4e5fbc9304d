"""Validation of where a connection points: base URLs and URL-like options (no metadata
endpoints, no surprise private hosts) and AWS regions. The address rules are checked again
whenever a provider connection is opened (`connections.providers.addresses`)."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from .providers.addresses import METADATA_REFUSED, PRIVATE_REFUSED, address_refusal

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
        reason = address_refusal(str(address), allow_private=allow_private)
        if reason == METADATA_REFUSED:
            raise ValidationError(reason, code="metadata")
        if reason == PRIVATE_REFUSED:
            raise ValidationError(reason, code="private")


# AWS regions: us-east-1, eu-central-2, ap-southeast-4, us-gov-west-1, cn-north-1,
# us-iso-east-1, us-isob-east-1. Nothing else may become part of an endpoint's host name.
AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")


def validate_region(region: str) -> None:
    if not AWS_REGION.fullmatch(region):
        raise ValidationError(
            "Not an AWS region (e.g. us-east-1, eu-west-3, us-gov-west-1).", code="region"
        )


def is_url_option(name: str, value: Any) -> bool:
    """An option naming a place to connect to (`control_endpoint_url`, `..._endpoint`, any
    value with a scheme): validated like the base URL."""
    if not isinstance(value, str) or not value:
        return False
    lowered = name.lower()
    return lowered.endswith(("url", "endpoint")) or "://" in value
