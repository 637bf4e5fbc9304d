"""Which egress proxy an upstream origin goes through, decided once per origin.

`Proxies.from_environment()` reads `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
`NO_PROXY` (upper or lower case; lower case wins, as curl does) when a client is built;
`Proxies.fixed(url)` is one proxy for every origin; `Proxies.none()` goes direct. Proxies
are `http://[user:password@]host:port` (the CONNECT method carries TLS to the upstream;
plain-HTTP upstreams are asked in absolute form). `NO_PROXY` entries: `*`, a host name
(matching itself and its subdomains, with or without a leading dot), a host:port, an IP
address or a CIDR network (matching IP literals).
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .base import ConnectError


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    # `proxy-authorization: Basic ...\r\n`, or b"" without credentials.
    authorization: bytes = b""

    @property
    def label(self) -> str:
        """host:port, for the admin and logs (never the credentials)."""
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, url: str, password: str | None = None) -> Proxy:
        """A proxy URL; `password` (kept apart from the URL, where it is a secret) wins."""
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme.lower() != "http" or not parts.hostname:
            raise ValueError("a proxy is an http://host:port URL")
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError("the proxy's port is not a number") from None
        user = unquote(parts.username or "")
        secret = password if password else unquote(parts.password or "")
        auth = b""
        if user or secret:
            token = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
            auth = f"proxy-authorization: Basic {token}\r\n".encode("latin-1")
        return cls(parts.hostname, port, auth)


class _NoProxy:
    def __init__(self, text: str) -> None:
        self.everything = False
        self.names: list[tuple[str, int | None]] = []
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in text.replace(" ", ",").split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                self.everything = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name, port = entry, None
            if entry.count(":") == 1:
                name, _, digits = entry.partition(":")
                port = int(digits) if digits.isdigit() else None
            self.names.append((name.lstrip(".").lstrip("*.").lstrip("."), port))

    def matches(self, host: str, port: int) -> bool:
        if self.everything:
            return True
        host = host.lower().strip("[]").rstrip(".")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None and any(ip in network for network in self.networks):
            return True
        for name, only_port in self.names:
            if only_port is not None and only_port != port:
                continue
            if host == name or host.endswith("." + name):
                return True
        return False


class Proxies:
    """The proxy each origin goes through (or None), from one policy fixed at build time."""

    def __init__(
        self,
        *,
        https: Proxy | None = None,
        http: Proxy | None = None,
        no_proxy: str = "",
        source: str = "none",
    ) -> None:
        self._https = https
        self._http = http
        self._no_proxy = _NoProxy(no_proxy)
        self.source = source  # "none", "environment" or "connection": for the admin

    @classmethod
    def none(cls) -> Proxies:
        return cls()

    @classmethod
    def fixed(cls, url: str, *, password: str | None = None, no_proxy: str = "") -> Proxies:
        proxy = Proxy.parse(url, password)
        return cls(https=proxy, http=proxy, no_proxy=no_proxy, source="connection")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Proxies:
        env = os.environ if environ is None else environ

        def read(name: str) -> str:
            return (env.get(name.lower()) or env.get(name.upper()) or "").strip()

        every = read("all_proxy")
        https = read("https_proxy") or every
        plain = read("http_proxy") or every
        if not https and not plain:
            return cls.none()
        return cls(
            https=Proxy.parse(https) if https else None,
            http=Proxy.parse(plain) if plain else None,
            no_proxy=read("no_proxy"),
            source="environment",
        )

    def hosts(self) -> frozenset[str]:
        """The proxies' own host names (the address rules are not theirs to pass)."""
        return frozenset(p.host for p in (self._https, self._http) if p is not None)

    def for_origin(self, scheme: str, host: str, port: int) -> Proxy | None:
        proxy = self._https if scheme == "https" else self._http
        if proxy is None or self._no_proxy.matches(host, port):
            return None
        return proxy

    def describe(self, scheme: str, host: str, port: int) -> str:
        """What the admin shows: which proxy applies to this origin, and why."""
        proxy = self.for_origin(scheme, host, port)
        if proxy is not None:
            where = "the environment" if self.source == "environment" else "this connection"
            return f"via proxy {proxy.label} (from {where})"
        if self.source == "none":
            return "direct (no proxy)"
        if (self._https if scheme == "https" else self._http) is None:
            return f"direct (no proxy for {scheme})"
        return "direct (NO_PROXY matches)"


async def read_connect_answer(
    recv: Callable[[], Awaitable[bytes]], limit: int = 16384
) -> tuple[int, bytes]:
    """The status of a proxy's answer to CONNECT, read up to its blank line; any bytes
    past it (there should be none before the client speaks)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await recv()
        if not chunk:
            raise ConnectError("proxy closed the connection")
        data += chunk
        if len(data) > limit:
            raise ConnectError("proxy sent an oversized answer")
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    try:
        status = int(status_line[1])
    except (IndexError, ValueError):
        raise ConnectError("proxy sent a malformed answer") from None
    return status, rest
