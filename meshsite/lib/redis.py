"""Redis for code on the event loop: Lua scripts by SHA, pipelined, one small typed interface.

    client = connect(url, timeout=1.0)            # per event loop; connects on first use
    SCRIPT = Script("return ...")                # its SHA is computed once
    reply = await client.evalsha(SCRIPT, keys, args)   # loads the script on NOSCRIPT
    call = prepare(SCRIPT, keys, varying=2, fixed=[...])   # once per call shape
    reply = await client.call(call, a, b)        # only the varying arguments per call

Two clients implement `Redis`: `LeanRedis`, a home-made RESP2 client (one pipelined
connection per event loop: a command sent while no reply is awaited is written at once;
commands sent while replies are awaited are written together in one socket write per loop
iteration; replies resolve their futures in order; a prepared call's unchanging parts are
encoded once), and `RedisPyClient`, redis-py's asyncio client (hiredis parses when
installed), kept for the A/B of `make bench-ab-redis` (docs/PERFORMANCE.md).

Failure rules, the same for both: every failure to reach Redis is an `OSError`: connection
refused or lost (`RedisConnectionError`) and a reply slower than `timeout` (`TimeoutError`,
which on the lean client fails every command waiting on the connection and closes it). A
Redis error reply (`-ERR ...`) is a `RedisReplyError`. Neither client retries a command: the
next command after a failure reconnects. URLs: `redis://[[user]:password@]host[:port][/db]`,
and `rediss://` for TLS.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast
from urllib.parse import unquote, urlsplit

Arg = int | str | bytes
Reply = Any  # int | bytes | None | list[Reply]: what the script or command returns
ClientKind = Literal["lean", "redis-py"]
KINDS: tuple[ClientKind, ...] = ("lean", "redis-py")


class RedisConnectionError(ConnectionError):
    """Redis cannot be reached, or the connection broke (an OSError)."""


class RedisReplyError(Exception):
    """Redis answered with an error."""


@dataclass(frozen=True)
class Script:
    """A Lua script, run by its SHA1."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)


@dataclass(frozen=True)
class PreparedCall:
    """An `EVALSHA` whose keys and trailing arguments are fixed: per call, only `varying`
    arguments (placed between the keys and `fixed`) change."""

    script: Script
    keys: tuple[str, ...]
    varying: int
    fixed: tuple[Arg, ...]
    head: bytes  # RESP: the array header and EVALSHA, SHA, key count, keys
    tail: bytes  # RESP: the fixed arguments


def prepare(
    script: Script, keys: Sequence[str], varying: int, fixed: Sequence[Arg]
) -> PreparedCall:
    head = b"*%d\r\n%b" % (
        3 + len(keys) + varying + len(fixed),
        encode_args(["EVALSHA", script.sha, len(keys), *keys]),
    )
    return PreparedCall(script, tuple(keys), varying, tuple(fixed), head, encode_args(fixed))


class Redis(Protocol):
    """What code on the event loop may ask of Redis."""

    kind: ClientKind

    async def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Reply:
        """Run `script`; load it first if Redis lacks it (restarted, flushed)."""
        ...

    async def call(self, prepared: PreparedCall, *varying: Arg) -> Reply:
        """Run a prepared script call with this call's `varying` arguments."""
        ...

    async def execute(self, *args: Arg) -> Reply:
        """Any other command, e.g. ("SCRIPT", "FLUSH")."""
        ...

    async def delete(self, *keys: str) -> int: ...

    async def aclose(self) -> None: ...


def connect(
    url: str, *, timeout: float = 1.0, connect_timeout: float = 1.0, kind: ClientKind = "lean"
) -> Redis:
    """A client for the running event loop (it connects on its first command)."""
    if kind == "redis-py":
        return RedisPyClient(url, timeout=timeout, connect_timeout=connect_timeout)
    return LeanRedis(url, timeout=timeout, connect_timeout=connect_timeout)


# --- the home-made client --------------------------------------------------------------------


class _Protocol(asyncio.Protocol):
    def __init__(self, client: LeanRedis) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.pending: collections.deque[asyncio.Future[Reply]] = collections.deque()
        self.outgoing: list[bytes] = []
        self.flush_scheduled = False
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.last_reply = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

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

    def send(self, command: bytes) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = self.client.loop.create_future()
        if self.closed or self.transport is None:
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
        if self.outgoing and not self.closed and self.transport is not None:
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


def _parse(buffer: bytearray, start: int) -> tuple[Reply, int]:
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


def _encode(args: Sequence[Arg]) -> bytes:
    return b"*%d\r\n%b" % (len(args), encode_args(args))


def encode_args(args: Sequence[Arg]) -> bytes:
    """Arguments as RESP bulk strings, without the array's header."""
    parts: list[bytes] = []
    append = parts.append
    for arg in args:
        value: bytes
        if isinstance(arg, bytes):
            value = arg
        elif isinstance(arg, str):
            value = arg.encode()
        elif isinstance(arg, int):  # bool too: True is 1
            value = b"%d" % arg
        else:
            raise TypeError(f"cannot send a {type(arg).__name__} to Redis")
        append(b"$%d\r\n%b\r\n" % (len(value), value))
    return b"".join(parts)


def _is_noscript(exc: Exception) -> bool:
    return str(exc).startswith("NOSCRIPT")


class LeanRedis:
    """One pipelined connection to Redis, for the event loop that made it."""

    kind: ClientKind = "lean"

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
        self._connecting: asyncio.Future[_Protocol] | None = None

    async def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Reply:
        return await self.call(prepare(script, keys, 0, args))

    async def call(self, prepared: PreparedCall, *varying: Arg) -> Reply:
        command = b"".join((prepared.head, encode_args(varying), prepared.tail))
        try:
            return await self.send(command)
        except RedisReplyError as exc:
            if not _is_noscript(exc):
                raise
        await self.execute("SCRIPT", "LOAD", prepared.script.source)
        return await self.send(command)

    async def execute(self, *args: Arg) -> Reply:
        return await self.send(_encode(args))

    async def send(self, command: bytes) -> Reply:
        """Send one command already encoded in RESP; return its reply."""
        protocol = self.protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        return await protocol.send(command)

    async def delete(self, *keys: str) -> int:
        deleted: int = await self.execute("DEL", *keys)
        return deleted

    async def _connect(self) -> _Protocol:
        if self._connecting is not None:  # another call is connecting: share its connection
            return await asyncio.shield(self._connecting)
        connecting = self._connecting = self.loop.create_future()
        try:
            protocol = await self._open()
        except BaseException as exc:
            failure = exc if isinstance(exc, OSError) else RedisConnectionError(str(exc))
            connecting.set_exception(failure)
            connecting.exception()  # retrieved: no "never retrieved" warning
            self._connecting = None
            raise failure from None
        connecting.set_result(protocol)
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
        setup: list[tuple[Arg, ...]] = []
        if self.password is not None:
            if self.username:
                setup.append(("AUTH", self.username, self.password))
            else:
                setup.append(("AUTH", self.password))
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


# --- the library client ----------------------------------------------------------------------


class RedisPyClient:
    """redis-py's asyncio client behind the same interface (hiredis parses if installed).

    Its pool opens a connection per concurrent command (up to 1,024); its own retries are
    off, so a failure surfaces at once under the same rules as the lean client's.
    """

    kind: ClientKind = "redis-py"

    def __init__(self, url: str, *, timeout: float = 1.0, connect_timeout: float = 1.0) -> None:
        import redis.asyncio
        import redis.exceptions
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._errors: Any = redis.exceptions
        self._client: Any = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=connect_timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            # Its default pool refuses a 101st command in flight (MaxConnectionsError): at
            # 64 calls in flight, admissions and settlements together pass that.
            max_connections=1024,
        )
        self._client.response_callbacks.clear()  # raw replies, as the lean client gives

    async def _run(self, *args: Arg) -> Reply:
        errors = self._errors
        try:
            return await self._client.execute_command(*args)
        except errors.TimeoutError:
            raise TimeoutError("Redis did not answer in time") from None
        except errors.ConnectionError as exc:
            raise RedisConnectionError(f"Redis is unreachable ({type(exc).__name__})") from None
        except errors.NoScriptError as exc:  # redis-py drops the NOSCRIPT prefix
            raise RedisReplyError(f"NOSCRIPT {exc}") from None
        except errors.ResponseError as exc:
            raise RedisReplyError(str(exc)) from None

    async def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Arg]) -> Reply:
        try:
            return await self._run("EVALSHA", script.sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not _is_noscript(exc):
                raise
        await self._run("SCRIPT", "LOAD", script.source)
        return await self._run("EVALSHA", script.sha, len(keys), *keys, *args)

    async def call(self, prepared: PreparedCall, *varying: Arg) -> Reply:
        return await self.evalsha(prepared.script, prepared.keys, (*varying, *prepared.fixed))

    async def execute(self, *args: Arg) -> Reply:
        return await self._run(*args)

    async def delete(self, *keys: str) -> int:
        deleted: int = await self._run("DEL", *keys)
        return deleted

    async def aclose(self) -> None:
        await self._client.aclose()


__all__ = [
    "KINDS",
    "Arg",
    "ClientKind",
    "LeanRedis",
    "PreparedCall",
    "Redis",
    "RedisConnectionError",
    "RedisPyClient",
    "RedisReplyError",
    "Reply",
    "Script",
    "connect",
    "encode_args",
    "prepare",
]
