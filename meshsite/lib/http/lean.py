"""A lean pooled HTTP/1.1 client for the hot path (adapters' calls to providers).

Why not httpx: under load, httpx and httpcore spent most of the gateway's CPU
per call in their connection pool (expiry checks that poll the socket, anyio
stream wrappers, h11's pure-Python parser), about 1 ms of CPU per request on
this machine's kind. This client does the one thing the adapters need, POST a
body and read the answer, whole or as it arrives, over keep-alive connections:
an `asyncio.Protocol` per connection and httptools' C parser (the one uvicorn
uses), so a call costs a write, a parse and a few callbacks.

What it does and does not do:
- HTTP/1.1 over TCP or TLS (the caller's context, by default `trust.tls_context()`:
  the system's trust store, certifi's where the system has none), keep-alive
  with an idle expiry, at most `max_connections` per origin (further requests
  wait for a free connection).
- Timeouts: `connect_timeout` to open a connection; `timeout` of inactivity
  while waiting for the answer (reset by every byte received), the way httpx's
  read timeout works.
- Responses decoded from chunked transfer encoding (by the parser), and from
  gzip or deflate if a server compresses although not asked to.
- Streams have back-pressure: reading from the upstream socket pauses while
  more than `HIGH_WATER` bytes wait for the consumer.
- No request is ever sent twice behind the caller's back: whatever was written
  may have reached the provider (and be billed), so only the router re-sends,
  as an attempt it records. A kept-alive connection the server closed is left
  out before anything is written to it: the loop sees its end, and one that
  idled over `_PROBE_AFTER` seconds is polled first (one syscall). One that
  closes after the request went out, before any byte of answer, is a
  `ClosedBeforeAnswer`; every failure is a `TransportError` for the adapter to
  map.
- An optional `address_check` sees the addresses each new connection's host
  resolves to (`loop.getaddrinfo`, off the loop's thread) and may refuse them
  (`AddressRefused`, nothing sent); the connection is then opened to the checked
  address itself. Kept-alive connections are not checked again.
- Egress proxies (`proxy.Proxies`, decided per origin once): TLS upstreams through an
  HTTP CONNECT tunnel, plain-HTTP ones in absolute form, with the proxy's Basic
  credentials. The address check applies to the upstream (resolved here when this
  host can resolve it; otherwise the proxy resolves it), never to the proxy.
- Connection failures carry a cause class (`TransportError.cause`, see `trust.cause`).
- No redirects, cookies, HTTP/2 or `Expect: 100-continue`: a gateway must not follow
  a provider's redirect anywhere.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import time
from urllib.parse import urlsplit

from .base import (
    AddressCheck,
    ConnectError,
    TimeoutException,
    TransportError,
    check_header_text,
)
from .connection import Connection, LeanResponse
from .proxy import Proxies, Proxy, read_connect_answer
from .trust import connect_error, tls_context

# A kept-alive connection idle longer than this is polled for the server's close before use.
_PROBE_AFTER = 1.0


class _Pool:
    """The connections to one origin (scheme, host, port) from one event loop."""

    def __init__(self, client: HTTPClient, scheme: str, host: str, port: int) -> None:
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.scheme, self.host, self.port = scheme, host, port
        self.proxy = client.proxies.for_origin(scheme, host, port)
        self.idle: list[Connection] = []
        self.count = 0  # open or opening connections
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.closed = False

    def _take_idle(self) -> Connection | None:
        """The most recently used idle connection still open and fresh; stale ones go."""
        expiry = self.client.keepalive_expiry
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            idle = now - conn.idle_since
            if not conn.closed and idle < expiry and (idle < _PROBE_AFTER or conn.quiet()):
                return conn
            conn._close()
            self.forget(conn)
        return None

    async def acquire(self) -> Connection:
        conn = self._take_idle()
        if conn is not None:
            return conn
        deadline = None
        while self.count >= self.client.max_connections:
            # Waiting for a free connection is bounded like opening one (httpx's pool timeout).
            if deadline is None:
                deadline = self.loop.time() + self.client.connect_timeout
            waiter = self.loop.create_future()
            self.waiters.append(waiter)
            timer = self.loop.call_at(deadline, _expire, waiter)
            try:
                await waiter
            except TimeoutException:
                raise
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._wake_one()  # pass the turn on
                raise
            finally:
                timer.cancel()
            conn = self._take_idle()
            if conn is not None:
                return conn
        self.count += 1
        try:
            return await self._connect()
        except BaseException:
            self.count -= 1
            self._wake_one()
            raise

    async def _connect(self) -> Connection:
        conn = Connection(self)
        # Until it is handed over, acquire() owns this connection's place in the count: a
        # transport closed while connecting (cancelled or timed out just after connection_made)
        # must not give the place back a second time from connection_lost.
        conn.forgotten = True
        try:
            await asyncio.wait_for(self._open(conn), self.client.connect_timeout)
        except BaseException as exc:
            conn._close()  # if the transport was made, it must not stay open unowned
            if isinstance(exc, TimeoutError):
                error = TimeoutException("connecting to the provider timed out")
                error.cause = "proxy: timeout" if self.proxy else "timeout"
                raise error from None
            if isinstance(exc, (OSError, ssl.SSLError, TransportError)):
                raise connect_error(exc, via_proxy=self.proxy is not None) from None
            raise
        if conn.closed:  # closed by the provider before it could carry a request
            raise ConnectError("the provider closed the connection at once")
        conn.forgotten = False
        return conn

    async def _open(self, conn: Connection) -> None:
        tls = self.client.ssl_context() if self.scheme == "https" else None
        if self.proxy is not None:
            return await self._open_via(self.proxy, conn, tls)
        check = self.client.address_check
        if check is None:
            hosts = [self.host]
        else:
            # Resolved here, checked, and connected to by address: what is checked is what
            # is connected to (no second lookup a rebinding name could answer differently).
            infos = await self.loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            hosts = [info[4][0] for info in check(infos)]
        for i, host in enumerate(hosts):
            try:
                await self.loop.create_connection(
                    lambda: conn,
                    host,
                    self.port,
                    ssl=tls,
                    server_hostname=self.host if tls else None,
                )
                return
            except OSError:
                if i + 1 == len(hosts):
                    raise

    async def _open_via(self, proxy: Proxy, conn: Connection, tls: ssl.SSLContext | None) -> None:
        """Through the proxy: the upstream's addresses checked (where this host resolves
        them: in a locked-down network only the proxy may), then a CONNECT tunnel for TLS,
        or a plain connection to the proxy for absolute-form HTTP."""
        check = self.client.address_check
        if check is not None:
            try:
                infos = await self.loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            except socket.gaierror:
                infos = []  # the proxy resolves it
            if infos:
                check(infos)
        try:
            infos = await self.loop.getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
            family, kind, proto, _, address = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise connect_error(exc, via_proxy=True) from None
        try:
            sock.setblocking(False)
            try:
                await self.loop.sock_connect(sock, address)
            except OSError as exc:
                raise connect_error(exc, via_proxy=True) from None
            if tls is not None:
                host = f"[{self.host}]" if ":" in self.host else self.host
                target = f"{host}:{self.port}"
                check_header_text(target)
                request = (
                    f"CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n".encode("latin-1")
                    + proxy.authorization
                    + b"\r\n"
                )
                await self.loop.sock_sendall(sock, request)
                status, rest = await read_connect_answer(lambda: self.loop.sock_recv(sock, 4096))
                if status != 200 or rest:
                    error = ConnectError(f"proxy refused ({status})")
                    error.cause = f"proxy refused ({status})"
                    raise error
            await self.loop.create_connection(
                lambda: conn, sock=sock, ssl=tls, server_hostname=self.host if tls else None
            )
        except BaseException:
            if conn.transport is None:
                sock.close()
            raise

    def release(self, conn: Connection) -> None:
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        self._wake_one()

    def forget(self, conn: Connection) -> None:
        """A connection closed: it no longer counts (called once per connection)."""
        if conn.forgotten:
            return
        conn.forgotten = True
        if conn in self.idle:
            self.idle.remove(conn)
        self.count -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self.closed = True
        for conn in self.idle:
            conn._close()
        self.idle.clear()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutException("no connection to the provider came free in time"))


class HTTPClient:
    """Pooled keep-alive connections per origin, for one event loop."""

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
        """`address_check` gets each new connection's `getaddrinfo` results and returns
        those that may be connected to, or raises AddressRefused. `proxies`: none unless
        given (the caller decides, e.g. `Proxies.from_environment()`)."""
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.user_agent = user_agent
        self.address_check = address_check
        self.proxies = proxies or Proxies.none()
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._targets: dict[str, tuple[tuple[str, str, int], bytes]] = {}
        self._ssl = ssl_context  # None: `tls_context()`, made on first use
        self.is_closed = False

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = tls_context()
        return self._ssl

    def _target(self, url: str) -> tuple[tuple[str, str, int], bytes]:
        """(origin, request head start) for a URL, computed once per URL."""
        found = self._targets.get(url)
        if found is not None:
            return found
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ConnectError("unsupported URL")
        port = parts.port or (443 if scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
        host = parts.hostname if default else f"{parts.hostname}:{port}"
        if ":" in parts.hostname:  # IPv6 literal
            host = f"[{parts.hostname}]" + ("" if default else f":{port}")
        for text in (path, host, self.user_agent):
            check_header_text(text)
        proxy = self.proxies.for_origin(scheme, parts.hostname, port) if scheme == "http" else None
        if proxy is not None:  # a plain-HTTP upstream through a proxy: absolute form
            path = f"http://{host}{path}"
        start = f" {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: {self.user_agent}\r\n"
        head = start.encode("latin-1") + (proxy.authorization if proxy is not None else b"")
        found = ((scheme, parts.hostname, port), head)
        if len(self._targets) < 1024:
            self._targets[url] = found
        return found

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes = b"",
        headers: bytes = b"",
        stream: bool = False,
    ) -> LeanResponse:
        """Send a request; `headers` holds pre-encoded header lines (see `encode_headers`).

        Whole answers are read before returning (`content`); a stream's body is read with
        `aiter_bytes`, and the caller must `aclose()` the response (every exit path).
        """
        if self.is_closed:
            raise ConnectError("the client is closed")
        origin, start = self._target(url)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = _Pool(self, *origin)
        data = b"".join(
            (
                method.encode("ascii"),
                start,
                headers,
                b"content-length: ",
                str(len(content)).encode("ascii"),
                b"\r\n\r\n",
                content,
            )
        )
        conn = await pool.acquire()
        try:
            response = await conn.send(data, self.timeout)
        except BaseException:
            conn.finish()
            raise
        if stream:
            return response
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def aclose(self) -> None:
        """Close idle connections now; busy ones close when their answers are done."""
        self.is_closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
