"""One keep-alive connection of the lean client (`lean`): an `asyncio.Protocol` whose
answers httptools' C parser reads as they arrive, and the response it hands out."""

from __future__ import annotations

import asyncio
import collections
import select
import zlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import httptools

from .base import ClosedBeforeAnswer, Headers, RemoteProtocolError, TimeoutException

if TYPE_CHECKING:
    from .lean import _Pool

HIGH_WATER = 256 * 1024


class LeanResponse:
    """One response. `content` is set for whole responses; streams use `aiter_bytes`."""

    __slots__ = ("_conn", "content", "headers", "status_code")

    def __init__(self, conn: Connection, status_code: int, headers: Headers) -> None:
        self._conn: Connection | None = conn
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


class Connection(asyncio.Protocol):
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
        self._headers = Headers()
        self._head: asyncio.Future[LeanResponse] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._keep_alive = False  # read when the answer completes: the parser resets after it
        self._error: BaseException | None = None
        self._received = False
        self._decoder: Any = None  # a zlib decompressor
        self._until_eof = False  # an answer with neither a length nor chunks ends at EOF
        self._last = 0.0
        self._timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.forgotten = False

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

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
            head.set_result(LeanResponse(self, status, self._headers))

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

    def send(self, data: bytes, timeout: float) -> asyncio.Future[LeanResponse]:
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
        if self.transport is None:
            raise RemoteProtocolError("the connection is not open")
        self.transport.write(data)
        return self._head

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, None at its end; raises TransportError on failure."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                transport = self.transport
                low = self._buffered <= HIGH_WATER // 4
                if self._paused and low and not self.closed and transport is not None:
                    self._paused = False
                    self._last = self.loop.time()
                    transport.resume_reading()
                return chunk
            if self._error is not None:
                raise self._error
            if self._complete:
                if self._decoder is not None:
                    tail: bytes = self._decoder.flush()
                    self._decoder = None
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
            if self._paused and self.transport is not None:
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
