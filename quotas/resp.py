"""A lean Redis client for admission's two script calls per request.

redis-py's asyncio client spent more of the gateway's CPU per call on its
connection pool, health checks, retries and timeouts than the two `EVALSHA`
round trips themselves. Admission needs little: run a Lua script by its SHA
(loading it on `NOSCRIPT`), now and then `DEL`. This client does that over one
connection per event loop, pipelined: a command sent while no reply is awaited
is written at once; commands sent while replies are awaited (concurrent calls)
are written together in one socket write per loop iteration. Replies, which
Redis sends in order, resolve their futures in order.

Failures are `OSError`s, as admission expects of an unreachable Redis: connection
refused or lost (`RedisConnectionError`), and a reply that takes longer than
`timeout` (`TimeoutError`, which fails every command waiting on the connection
and closes it). A Redis error reply (`-ERR ...`) is a `RedisReplyError`.
URLs: `redis://[[user]:password@]host[:port][/db]`, and `rediss://` for TLS.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from typing import Any
from urllib.parse import unquote, urlsplit


class RedisConnectionError(ConnectionError):
    """Redis cannot be reached, or the connection broke (an OSError)."""


class RedisReplyError(Exception):
    """Redis answered with an error."""


class _Protocol(asyncio.Protocol):
    def __init__(self, client: LeanRedis) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: collections.deque[asyncio.Future] = collections.deque()
        self.outgoing: list[bytes] = []
        self.flush_scheduled = False
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.last_reply = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.last_reply = self.client.loop.time()
        while self.pending:
            try:
                reply, end = _parse(self.buffer, 0)
            except _Incomplete:
                return
            except ValueError:
                self._fail(RedisConnectionError("Redis sent a malformed reply"))
                return
            del self.buffer[:end]
            future = self.pending.popleft()
            if not future.done():
                if isinstance(reply, RedisReplyError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        if self.buffer:  # a reply nobody waits for: the stream is out of step
            self._fail(RedisConnectionError("Redis sent an unexpected reply"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError("the connection to Redis was lost"))

    def send(self, command: bytes) -> asyncio.Future:
        future = self.client.loop.create_future()
        if self.closed:
            future.set_exception(RedisConnectionError("the connection to Redis is closed"))
            return future
        idle = not self.pending
        self.pending.append(future)
        if idle:
            # Nothing in flight (always so at concurrency 1): write at once rather than
            # one loop iteration later, which would let other work run before it.
            self.last_reply = self.client.loop.time()
            self.transport.write(command)
        else:
            self.outgoing.append(command)
            if not self.flush_scheduled:
                self.flush_scheduled = True
                self.client.loop.call_soon(self._flush)
        if self.timer is None:
            self.timer = self.client.loop.call_later(self.client.timeout, self._check_timeout)
        return future

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.outgoing and not self.closed:
            data = b"".join(self.outgoing) if len(self.outgoing) > 1 else self.outgoing[0]
            self.outgoing.clear()
            self.transport.write(data)

    def _check_timeout(self) -> None:
        self.timer = None
        if self.closed or not self.pending:
            return
        now = self.client.loop.time()
        remaining = self.last_reply + self.client.timeout - now
        if remaining > 0:
            self.timer = self.client.loop.call_later(remaining, self._check_timeout)
            return
        self._fail(TimeoutError("Redis did not answer in time"))

    def _fail(self, error: BaseException) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.outgoing.clear()
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(error)
        if self.client.protocol is self:
            self.client.protocol = None


class _Incomplete(Exception):
    pass


def _parse(buffer: bytearray, start: int) -> tuple[Any, int]:
    """One RESP2 reply from `buffer[start:]`: (value, end offset); _Incomplete if cut short."""
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        raise _Incomplete
    kind = buffer[start]
    head = bytes(buffer[start + 1 : line_end])
    after = line_end + 2
    if kind == 0x3A:  # ':' integer
        return int(head), after
    if kind == 0x24:  # '$' bulk string
        length = int(head)
        if length < 0:
            return None, after
        end = after + length
        if len(buffer) < end + 2:
            raise _Incomplete
        return bytes(buffer[after:end]), end + 2
    if kind == 0x2A:  # '*' array
        count = int(head)
        if count < 0:
            return None, after
        items = []
        for _ in range(count):
            item, after = _parse(buffer, after)
            items.append(item)
        return items, after
    if kind == 0x2B:  # '+' simple string
        return head, after
    if kind == 0x2D:  # '-' error
        return RedisReplyError(head.decode("utf-8", "replace")), after
    raise ValueError("unknown RESP type")


def _encode(args: tuple[Any, ...]) -> bytes:
    return b"*%d\r\n%b" % (len(args), encode_args(args))


def encode_args(args: tuple[Any, ...] | list[Any]) -> bytes:
    """Arguments as RESP bulk strings, without the array's header: a command's
    unchanging parts can be encoded once and joined with the parts that change."""
    parts = []
    append = parts.append
    for arg in args:
        kind = type(arg)
        if kind is int:
            value = b"%d" % arg
        elif kind is str:
            value = arg.encode()
        elif kind is bytes:
            value = arg
        elif isinstance(arg, bool):
            value = b"1" if arg else b"0"
        elif isinstance(arg, (int, float)):
            value = repr(arg).encode()
        elif isinstance(arg, str):
            value = arg.encode()
        else:
            raise TypeError(f"cannot send a {type(arg).__name__} to Redis")
        append(b"$%d\r\n%b\r\n" % (len(value), value))
    return b"".join(parts)


class Script:
    """A Lua script run by its SHA1; loaded into Redis the first time Redis lacks it."""

    def __init__(self, client: LeanRedis, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, *, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.client.execute("EVAL", self.source, len(keys), *keys, *args)

    def head(self, count: int, keys: list[str]) -> bytes:
        """The start of an `EVALSHA` of `count` arguments after the keys, up to the keys."""
        return b"*%d\r\n%b" % (
            3 + len(keys) + count,
            encode_args(["EVALSHA", self.sha, len(keys), *keys]),
        )

    async def run_encoded(self, command: bytes) -> Any:
        """Send an `EVALSHA` command built from `head` and `encode_args`."""
        try:
            return await self.client.send(command)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.client.execute("SCRIPT", "LOAD", self.source)
        return await self.client.send(command)


class LeanRedis:
    """One pipelined connection to Redis, for the event loop that made it."""

    def __init__(self, url: str, *, timeout: float = 1.0, connect_timeout: float = 1.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError("Only redis:// and rediss:// URLs are supported here.")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.tls = parts.scheme == "rediss"
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        path = parts.path.strip("/")
        self.db = int(path) if path else 0
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.loop = asyncio.get_running_loop()
        self.protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None

    def register_script(self, source: str) -> Script:
        return Script(self, source)

    async def execute(self, *args: Any) -> Any:
        return await self.send(_encode(args))

    async def send(self, command: bytes) -> Any:
        """Send one command already encoded in RESP; return its reply."""
        protocol = self.protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return await protocol.send(command)

    async def delete(self, *keys: str) -> int:
        return await self.execute("DEL", *keys)

    async def _connect(self) -> _Protocol:
        if self._connecting is not None:  # another call is connecting: share its connection
            return await asyncio.shield(self._connecting)
        self._connecting = self.loop.create_future()
        try:
            protocol = await self._open()
        except BaseException as exc:
            failure = exc if isinstance(exc, OSError) else RedisConnectionError(str(exc))
            self._connecting.set_exception(failure)
            self._connecting.exception()  # retrieved: no "never retrieved" warning
            self._connecting = None
            raise failure from None
        self._connecting.set_result(protocol)
        self._connecting = None
        return protocol

    async def _open(self) -> _Protocol:
        protocol = _Protocol(self)
        context = ssl.create_default_context() if self.tls else None
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: protocol,
                    self.host,
                    self.port,
                    ssl=context,
                    server_hostname=self.host if context else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            raise TimeoutError("connecting to Redis timed out") from None
        except OSError as exc:
            raise RedisConnectionError(f"Redis is unreachable ({type(exc).__name__})") from None
        setup = []
        if self.password is not None:
            auth = ("AUTH", self.username, self.password) if self.username else None
            setup.append(auth or ("AUTH", self.password))
        if self.db:
            setup.append(("SELECT", self.db))
        try:
            for command in setup:
                await protocol.send(_encode(command))
        except BaseException:
            protocol._fail(RedisConnectionError("Redis refused the connection's setup"))
            raise
        self.protocol = protocol
        return protocol

    async def aclose(self) -> None:
        if self.protocol is not None:
            self.protocol._fail(RedisConnectionError("closed"))


__all__ = ["LeanRedis", "RedisConnectionError", "RedisReplyError", "Script", "encode_args"]
