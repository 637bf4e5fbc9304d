"""The upstream HTTP client on aiohttp's client (the library side of the A/B, `bench/ab.py`).

The same interface and errors as the lean client: keep-alive pools per origin, no
redirects, no environment settings read by aiohttp itself, no cookies, the caller's
`address_check` applied to every new connection's resolved addresses (a resolver of
its own), `timeout` of inactivity while reading and `connect_timeout` to open. The same
trust (`trust.tls_context()` by default) and proxies (`proxy.Proxies`, aiohttp's CONNECT
tunnel and absolute form); through a proxy the upstream's addresses are checked before a
request, the answer kept for the keep-alive expiry (aiohttp has no hook per tunnel).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from .base import (
    AddressCheck,
    AddressRefused,
    ClosedBeforeAnswer,
    ConnectError,
    Headers,
    RemoteProtocolError,
    TimeoutException,
    TransportError,
    decode_headers,
)
from .proxy import Proxies
from .trust import connect_error, tls_context


class _CheckedResolver(AbstractResolver):
    """The loop's `getaddrinfo`, then the caller's check on what it gave."""

    def __init__(self, check: AddressCheck | None, proxy_hosts: frozenset[str]) -> None:
        self._check = check
        self._proxy_hosts = proxy_hosts  # the rules are the upstream's, not the proxy's

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        infos: list[tuple[Any, ...]] = list(
            await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        )
        if self._check is not None and host not in self._proxy_hosts:
            infos = self._check(infos)
        return [
            ResolveResult(
                hostname=host,
                host=str(info[4][0]),
                port=int(info[4][1]),
                family=int(info[0]),
                proto=int(info[2]),
                flags=socket.AI_NUMERICHOST,
            )
            for info in infos
        ]

    async def close(self) -> None:
        pass


def _error(exc: BaseException, via_proxy: bool = False) -> TransportError:
    """aiohttp's exception as one of the interface's, its cause class named."""
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        error: TransportError = TimeoutException("the provider did not answer in time")
        error.cause = "timeout"
        return error
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ClosedBeforeAnswer("kept-alive connection closed before the answer")
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        error = ConnectError(f"proxy refused ({exc.status})")
        error.cause = f"proxy refused ({exc.status})"
        return error
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return connect_error(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return connect_error(exc.os_error, via_proxy=True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        inner = exc.os_error
        if isinstance(inner.__cause__, AddressRefused):
            return AddressRefused(str(inner.__cause__))
        return connect_error(inner, via_proxy=via_proxy)
    if isinstance(exc, aiohttp.InvalidURL):
        return ConnectError(type(exc).__name__)
    return RemoteProtocolError(type(exc).__name__)


class AiohttpResponse:
    __slots__ = ("_response", "content", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response: aiohttp.ClientResponse | None = response
        self.status_code = response.status
        headers = Headers()
        for name, value in response.headers.items():
            key = name.lower()
            headers[key] = headers[key] + ", " + value if key in headers else value
        self.headers: Mapping[str, str] = headers
        self.content = b""

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        response = self._response
        if response is None:
            raise RemoteProtocolError("the response is closed")
        try:
            async for chunk in response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _error(exc) from None

    async def aread(self) -> bytes:
        parts = [chunk async for chunk in self.aiter_bytes()]
        self.content = b"".join(parts)
        return self.content

    async def aclose(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.release()  # back to the pool if fully read; closed otherwise


class AiohttpClient:
    def __init__(
        self,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_connections: int = 1000,
        keepalive_expiry: float = 30.0,
        user_agent: str = "meshgate",
        ssl_context: ssl.SSLContext | None = None,
        address_check: AddressCheck | None = None,
        proxies: Proxies | None = None,
    ) -> None:
        self.is_closed = False
        self._check = address_check
        self._user_agent = user_agent
        self._headers: dict[bytes, dict[str, str]] = {}
        self.proxies = proxies or Proxies.none()
        self._keepalive = keepalive_expiry
        # URL -> (proxy URL or None, proxy headers or None); origin host -> checked until.
        self._routes: dict[str, tuple[URL | None, dict[str, str] | None, str]] = {}
        self._checked: dict[str, float] = {}
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=max_connections,
            keepalive_timeout=keepalive_expiry,
            resolver=_CheckedResolver(address_check, self.proxies.hosts()),
            ssl=ssl_context if ssl_context is not None else tls_context(),
            use_dns_cache=False,  # every new connection is checked on what its name gives then
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
            auto_decompress=True,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    def _route(self, url: str) -> tuple[URL | None, dict[str, str] | None, str]:
        """(proxy, proxy headers, upstream host) for a URL, decided once per URL."""
        found = self._routes.get(url)
        if found is not None:
            return found
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        proxy = self.proxies.for_origin(scheme, host, port)
        found = (None, None, host)
        if proxy is not None:
            headers = None
            if proxy.authorization:
                name, _, value = proxy.authorization.decode("latin-1").partition(": ")
                headers = {name: value.strip()}
            found = (URL(f"http://{proxy.host}:{proxy.port}"), headers, host)
        if len(self._routes) < 1024:
            self._routes[url] = found
        return found

    async def _check_upstream(self, host: str, port: int) -> None:
        """Through a proxy: the upstream's own addresses, where this host resolves them."""
        loop = asyncio.get_running_loop()
        if self._checked.get(host, 0.0) > loop.time():
            return
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            infos = []  # only the proxy can resolve it
        if infos and self._check is not None:
            self._check(list(infos))
        self._checked[host] = loop.time() + self._keepalive

    def _check_literal(self, url: str) -> None:
        """aiohttp connects to an IP literal without asking the resolver: checked here, on
        every request (a numeric getaddrinfo, no lookup), which is stricter than the lean
        client's check per new connection and costs a few microseconds."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return  # a name: the resolver checks what it resolves to
        infos = socket.getaddrinfo(
            host, parts.port or 0, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
        )
        assert self._check is not None
        self._check(list(infos))

    def _header_dict(self, lines: bytes) -> dict[str, str]:
        found = self._headers.get(lines)
        if found is None:
            found = decode_headers(lines)
            found["user-agent"] = self._user_agent
            if len(self._headers) < 64:  # adapters reuse one; signed requests do not
                self._headers[lines] = found
        return found

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes = b"",
        headers: bytes = b"",
        stream: bool = False,
    ) -> AiohttpResponse:
        if self.is_closed:
            raise ConnectError("the client is closed")
        proxy, proxy_headers, host = self._route(url)
        if self._check is not None:
            if proxy is None:
                self._check_literal(url)
            else:
                try:
                    await self._check_upstream(host, urlsplit(url).port or 443)
                except AddressRefused as exc:
                    raise AddressRefused(str(exc)) from None
        try:
            raw = await self._session.request(
                method,
                # As given: yarl would otherwise re-quote the path (Bedrock signs it quoted).
                URL(url, encoded=True),
                data=content,
                headers=self._header_dict(headers),
                allow_redirects=False,
                proxy=proxy,
                proxy_headers=proxy_headers,
            )
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise _error(exc, proxy is not None) from None
        response = AiohttpResponse(raw)
        if stream:
            return response
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def aclose(self) -> None:
        self.is_closed = True
        await self._session.close()
