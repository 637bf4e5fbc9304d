"""The network between Meshgate and a provider, per connection: proxy, trust, extra headers.

Policy over the mechanism in `meshsite.lib.http` (proxies, TLS contexts): made once when
a connection's adapter is built, from its `ConnectionConfig`, and used by the hot path
and by Test connection and Discover alike, so a green test means calls get through.

- Proxy: the connection's own (`proxy_url`, its password a secret), `none`, or the
  environment's `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY`.
- Trust: the system's store (certifi where the system has none), `MESHGATE_CA_BUNDLE`,
  the connection's extra CA; its client certificate and key for mutual TLS; verification
  off only when the connection says so (shown in red in the admin, written in the record).
- Headers: the connection's extra headers, plain and secret (`Name: value` lines).
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from meshsite.lib import http

# Headers a connection may not set: the wire's own, or the adapters' (auth, signature).
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "content-type",
        "user-agent",
        "authorization",
        "api-key",
        "x-amz-date",
        "x-amz-security-token",
        "x-amz-content-sha256",
    }
)
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")


@dataclass(frozen=True)
class Transport:
    """What a connection's HTTP client is built with."""

    ssl_context: ssl.SSLContext
    proxies: http.Proxies
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    verify: bool = True


def parse_secret_headers(text: str) -> dict[str, str]:
    """`Name: value` lines; blank lines skipped."""
    found: dict[str, str] = {}
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError("each secret header is a 'Name: value' line")
        found[name.strip()] = value.strip()
    return found


def header_errors(headers: Any) -> str | None:
    if not isinstance(headers, dict):
        return "Extra headers are an object of header names and values."
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            return f"{name!r} is not a header name."
        if name.lower() in RESERVED_HEADERS:
            return f"The {name} header is set by Meshgate itself."
        if not isinstance(value, str) or any(c in value for c in "\r\n\x00"):
            return f"The {name} header's value must be text on one line."
    return None


def secret_headers_error(text: str) -> str | None:
    """Why secret header lines cannot be used (their values are not named), or None."""
    try:
        return header_errors(parse_secret_headers(text))
    except ValueError as exc:
        return str(exc)


def network_errors(connection: Any) -> dict[str, str]:
    """Why a connection's network settings cannot be used, per field (for `clean`)."""
    errors: dict[str, str] = {}
    proxy = (connection.proxy_url or "").strip()
    if proxy and proxy.lower() != "none":
        try:
            http.Proxy.parse(proxy)
            if urlsplit(proxy).password:
                errors["proxy_url"] = "Put the proxy's password in the secret field, not the URL."
        except ValueError as exc:
            errors["proxy_url"] = f"The proxy {exc}."
    if connection.ca_certificate:
        try:
            ssl.create_default_context().load_verify_locations(cadata=connection.ca_certificate)
        except (ssl.SSLError, ValueError):
            errors["ca_certificate"] = "This is not a PEM certificate."
    if connection.client_certificate and "BEGIN CERTIFICATE" not in connection.client_certificate:
        errors["client_certificate"] = "This is not a PEM certificate."
    problem = header_errors(connection.extra_headers or {})
    if problem:
        errors["extra_headers"] = problem
    return errors


def proxies_for(config: Any) -> http.Proxies:
    chosen = (config.proxy_url or "").strip()
    if chosen.lower() == "none":
        return http.Proxies.none()
    if chosen:
        return http.Proxies.fixed(chosen, password=config.secrets.get("proxy_password"))
    return http.Proxies.from_environment()


def ca_bundles() -> tuple[str, ...]:
    bundle = getattr(settings, "MESHGATE_CA_BUNDLE", "")
    return (bundle,) if bundle else ()


def warm() -> None:
    """Read the system's trust store and MESHGATE_CA_BUNDLE now (cached per process)."""
    http.tls_context(ca_bundles=ca_bundles())


def transport_for(config: Any) -> Transport:
    """The transport of one connection version (built once, with its adapter)."""
    secrets = config.secrets
    context = http.tls_context(
        ca_bundles=ca_bundles(),
        ca_pem=config.ca_certificate,
        client_cert_pem=config.client_certificate,
        client_key_pem=secrets.get("client_key", ""),
        verify=config.verify_tls,
    )
    headers = dict(config.extra_headers or {})
    headers.update(parse_secret_headers(secrets.get("secret_headers", "")))
    return Transport(context, proxies_for(config), headers, config.verify_tls)


def describe(config: Any, url: str) -> str:
    """For the admin: how calls to `url` leave (proxy, trust)."""
    parts = urlsplit(url)
    scheme = (parts.scheme or "https").lower()
    host = parts.hostname or ""
    port = parts.port or (443 if scheme == "https" else 80)
    try:
        route = proxies_for(config).describe(scheme, host, port)
    except ValueError as exc:
        route = f"proxy setting unusable: {exc}"
    trust = ["system trust store"]
    if ca_bundles():
        trust.append("MESHGATE_CA_BUNDLE")
    if config.ca_certificate:
        trust.append("this connection's CA")
    text = f"{route}; trusts the {', '.join(trust)}"
    if config.client_certificate:
        text += "; presents a client certificate"
    if not config.verify_tls:
        text = f"{route}; CERTIFICATE VERIFICATION IS OFF"
    return text
