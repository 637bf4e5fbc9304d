"""A lean pooled HTTP/1.1 client for the hot path (adapters' calls to providers).

Why not httpx: under load, httpx and httpcore spent most of the gateway's CPU
per call in their connection pool (expiry checks that poll the socket, anyio
stream wrappers, h11's pure-Python parser), about 1 ms of CPU per request on
this machine's kind. This client does the one thing the adapters need, POST a
body and read the answer, whole or as it arrives, over keep-alive connections:
an `asyncio.Protocol` per connection and httptools' C parser (the one uvicorn
uses), so a call costs a write, a parse and a few callbacks.

What it does and does not do:
- HTTP/1.1 over TCP or TLS (the system's trust store, or certifi's when it is
  installed), keep-alive with an idle expiry, at most `max_connections` per
  origin (further requests wait for a free connection).
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
- No redirects, proxies, cookies, HTTP/2 or `Expect: 100-continue`: a gateway
  must not follow a provider's redirect anywhere, and reads no proxy settings
  from its environment.
"""

from __future__ import annotations

import asyncio
import collections
import select
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024
# A kept-alive connection idle longer than this is polled for the server's close before use.
_PROBE_AFTER = 1.0


class TransportError(Exception):
    """The request could not be sent or its answer not read (network, protocol)."""


class ConnectError(TransportError):
    pass


class TimeoutException(TransportError):
    pass


class AddressRefused(ConnectError):
    """The provider's host resolved to an address the address check refuses: nothing sent.
    Its text is the check's reason (no host, no address)."""


class RemoteProtocolError(TransportError):
    pass


class ClosedBeforeAnswer(RemoteProtocolError):
    """A kept-alive connection closed after the request was written, before any byte of
    answer. The provider may have read the request: sending it again is a new attempt."""


class Headers(dict):
    """Response headers: lower-cased names, repeated headers joined with ", "."""

    __slots__ = ()


class Response:
    """One response. `content` is set for whole responses; streams use `aiter_bytes`."""

    __slots__ = ("_conn", "content", "headers", "status_code")

    def __init__(self, conn: _Connection, status_code: int, headers: Headers) -> None:
        self._conn: _Connection | None = conn
        self.status_code = status_code
        self.headers = headers
        self.content = b""

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            raise RemoteProtocolError("the response is closed")
        while True:
            chunk = await conn.next_chunk()
            if chunk is None:
                return
            yield chunk

    async def aread(self) -> bytes:
        parts = [chunk async for chunk in self.aiter_bytes()]
        self.content = b"".join(parts)
        return self.content

    async def aclose(self) -> None:
        """Give the connection back (answer fully read) or close it (answer cut short)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finish()


def _ssl_context() -> ssl.SSLContext:
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - certifi comes with the openai SDK
        return ssl.create_default_context()


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, the answer parsed as it arrives."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.used = False  # has carried a request before (a reused keep-alive connection)
        self._busy = False
        self._header_name = b""
        self._headers: Headers | None = None
        self._head: asyncio.Future | None = None  # resolves to the Response
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future | None = None
        self._complete = False
        self._keep_alive = False  # read when the answer completes: the parser resets after it
        self._error: BaseException | None = None
        self._received = False
        self._decoder = None
        self._until_eof = False  # an answer with neither a length nor chunks ends at EOF
        self._last = 0.0
        self._timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.forgotten = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self._busy:  # bytes nobody asked for: the connection cannot be trusted
            self._close()
            return
        self._received = True
        self._last = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if not self._complete:  # bytes after a complete answer leave the answer whole
                self._fail(RemoteProtocolError("malformed response"))
            self._close()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        head = self._head
        if self._busy and self._until_eof and exc is None and head is not None and head.done():
            self._complete = True
            self._wake()
        elif self._busy and not self._complete:
            if not self._received and self.used:
                self._fail(ClosedBeforeAnswer("kept-alive connection closed before the answer"))
            else:
                self._fail(RemoteProtocolError("connection closed before the answer was complete"))
        self.pool.forget(self)

    def pause_writing(self) -> None:  # request bodies are small; nothing to do
        pass

    def resume_writing(self) -> None:
        pass

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            # More bytes after the end of the answer (a broken or hostile upstream): parsed on,
            # they would join this answer's headers and body. Stop here; the connection closes.
            raise RemoteProtocolError("bytes after the end of the answer")

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._headers
        if key in headers:
            headers[key] = headers[key] + ", " + text
        else:
            headers[key] = text

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx interim answers: wait for the real one
            self._headers = Headers()
            return
        headers = self._headers
        self._until_eof = (
            "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
            and status not in (204, 304)
        )
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        head = self._head
        if head is not None and not head.done():
            head.set_result(Response(self, status, self._headers))

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body)
            except zlib.error:
                self._fail(RemoteProtocolError("undecodable response body"))
                self._close()
                return
            if not body:
                return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            return
        self._complete = True
        self._keep_alive = self.parser.should_keep_alive()
        self._cancel_timer()
        self._wake()

    # --- one request ------------------------------------------------------------------------

    def send(self, data: bytes, timeout: float) -> asyncio.Future:
        self._busy = True
        self._complete = False
        self._keep_alive = False
        self._error = None
        self._received = False
        self._headers = Headers()
        self._chunks.clear()
        self._buffered = 0
        self._decoder = None
        self._head = self.loop.create_future()
        self._last = self.loop.time()
        self._timeout = timeout
        self._timer = self.loop.call_later(timeout, self._check_timeout)
        self.transport.write(data)
        return self._head

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, None at its end; raises TransportError on failure."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered <= HIGH_WATER // 4 and not self.closed:
                    self._paused = False
                    self._last = self.loop.time()
                    self.transport.resume_reading()
                return chunk
            if self._error is not None:
                raise self._error
            if self._complete:
                if self._decoder is not None:
                    tail, self._decoder = self._decoder.flush(), None
                    if tail:
                        return tail
                return None
            self._waiter = self.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def finish(self) -> None:
        """The caller is done with the response: reuse the connection or close it."""
        if not self._busy:
            return
        self._busy = False
        self._cancel_timer()
        self._chunks.clear()
        reusable = self._complete and self._error is None and not self.closed
        if reusable and self._keep_alive and not self.pool.closed:
            if self._paused:
                self._paused = False
                self.transport.resume_reading()
            self.used = True
            self.pool.release(self)
            return
        self._close()
        self.pool.forget(self)

    # --- internals --------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check_timeout(self) -> None:
        self._timer = None
        if not self._busy or self._complete:
            return
        now = self.loop.time()
        if self._paused:  # the consumer is slow, not the provider
            self._last = now
        remaining = self._last + self._timeout - now
        if remaining > 0:
            self._timer = self.loop.call_later(remaining, self._check_timeout)
            return
        self._fail(TimeoutException("the provider did not answer in time"))
        self._close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def quiet(self) -> bool:
        """True unless the idle socket has something to read: the server's close (or bytes
        nobody asked for), which the loop has not handled yet."""
        sock = self.transport.get_extra_info("socket") if self.transport else None
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN | getattr(select, "POLLRDHUP", 0))
        return not poller.poll(0)


class _Pool:
    """The connections to one origin (scheme, host, port) from one event loop."""

    def __init__(self, client: HTTPClient, scheme: str, host: str, port: int) -> None:
        self.client = client
        self.loop = asyncio.get_running_loop()
        self.scheme, self.host, self.port = scheme, host, port
        self.idle: list[_Connection] = []
        self.count = 0  # open or opening connections
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.closed = False

    def _take_idle(self) -> _Connection | None:
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

    async def acquire(self) -> _Connection:
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

    async def _connect(self) -> _Connection:
        conn = _Connection(self)
        # Until it is handed over, acquire() owns this connection's place in the count: a
        # transport closed while connecting (cancelled or timed out just after connection_made)
        # must not give the place back a second time from connection_lost.
        conn.forgotten = True
        try:
            await asyncio.wait_for(self._open(conn), self.client.connect_timeout)
        except BaseException as exc:
            conn._close()  # if the transport was made, it must not stay open unowned
            if isinstance(exc, TimeoutError):
                raise TimeoutException("connecting to the provider timed out") from None
            if isinstance(exc, AddressRefused):
                raise AddressRefused(str(exc)) from None
            if isinstance(exc, (OSError, ssl.SSLError)):
                raise ConnectError(type(exc).__name__) from None
            raise
        if conn.closed:  # closed by the provider before it could carry a request
            raise ConnectError("the provider closed the connection at once")
        conn.forgotten = False
        return conn

    async def _open(self, conn: _Connection) -> None:
        tls = self.client.ssl_context() if self.scheme == "https" else None
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

    def release(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self.idle.append(conn)
        self._wake_one()

    def forget(self, conn: _Connection) -> None:
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


def _expire(waiter: asyncio.Future) -> None:
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
        address_check: Callable[[list[tuple]], list[tuple]] | None = None,
    ) -> None:
        """`address_check` gets each new connection's `getaddrinfo` results and returns
        those that may be connected to, or raises AddressRefused."""
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self.user_agent = user_agent
        self.address_check = address_check
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._targets: dict[str, tuple[tuple[str, str, int], bytes]] = {}
        self._ssl = ssl_context  # None: the system's or certifi's trust store, made on first use
        self.is_closed = False

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = _ssl_context()
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
            _check_header_text(text)
        start = f" {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: {self.user_agent}\r\n"
        found = ((scheme, parts.hostname, port), start.encode("latin-1"))
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
    ) -> Response:
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


def encode_headers(headers: dict[str, str]) -> bytes:
    """`name: value\\r\\n` lines; refuses a CR or LF in a name or value (header injection)."""
    lines = []
    for name, value in headers.items():
        _check_header_text(name)
        _check_header_text(value)
        lines.append(f"{name}: {value}\r\n")
    try:
        return "".join(lines).encode("latin-1")
    except UnicodeEncodeError:
        raise ConnectError("a header holds a character HTTP headers cannot carry") from None


def _check_header_text(text: str) -> None:
    if "\r" in text or "\n" in text or "\x00" in text:
        raise ConnectError("a header holds a line break")


__all__ = [
    "AddressRefused",
    "ClosedBeforeAnswer",
    "ConnectError",
    "HTTPClient",
    "Headers",
    "RemoteProtocolError",
    "Response",
    "TimeoutException",
    "TransportError",
    "encode_headers",
]
