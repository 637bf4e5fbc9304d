"""PostgreSQL audit writes from the gateway's own event loop: no thread, no hand-off.

At one call at a time, the writer thread's hand-offs (queue, wake-up, then the
interpreter lock passed back and forth while the loop admits the call) cost
several times the insert itself. So the gateway's lifespan attaches a LoopWriter
to its serving loop (`AuditWriter.attach_loop`), and calls on that loop write
through it; anything else (another loop, a test's `asyncio.run`) still goes
through the thread in `audit.writer`.

One libpq connection, non-blocking, in pipeline mode, watched by the loop
(`add_reader`). Its statements are prepared once and take text parameters. A
*group* is some statements and a Sync: one implicit transaction, one commit, one
round trip. A group goes out as soon as it is asked for while fewer than
MAX_IN_FLIGHT groups are in flight; otherwise what arrives meanwhile waits and
goes as one group when an earlier one comes back (group commit: at one call at a
time each insert commits alone and at once; under load, groups grow instead of
commits multiplying). An insert's future resolves once its group committed.

If a statement fails, PostgreSQL aborts its whole group: the group's statements
are sent again one group each, and an insert that still fails gets
`AuditUnavailable` (the gateway answers 503 and sends nothing upstream). If the
connection breaks, everything unanswered is handed to the writer thread, which
retries on a fresh connection, and this writer reconnects a moment later.

On SQLite, `SQLiteLoopWriter` writes between the loop's callbacks: an insert and
its commit take ~30 µs in process, less than waking the thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db import connection, models
from django.utils import timezone

from .writer import _Op, json_bytes, latest_touches, text_without_nul

if TYPE_CHECKING:
    from .writer import _Statements

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2  # groups sent and not yet answered
MAX_GROUP = 500  # statements in one group
RECONNECT_SECONDS = 2.0
CONNECT_SECONDS = 10.0  # per address tried
_NOT_LIBPQ = {"cursor_factory", "context", "prepare_threshold", "server_side_binding"}
_INSERT = b"meshgate_audit_insert"
_UPDATE = b"meshgate_audit_update"
_TOUCH = b"meshgate_audit_touch"
_STATEMENT = {"insert": _INSERT, "update": _UPDATE, "touch": _TOUCH}
_POLLING = (1, 2)  # psycopg.pq.PollingStatus READING and WRITING: not done yet


class LoopWriter:
    def __init__(self, loop: asyncio.AbstractEventLoop, fallback: Callable[[_Op], None]) -> None:
        self.loop = loop
        self.usable = False  # connected and prepared; the AuditWriter routes here only then
        self.groups_sent = 0  # the tests read it
        self._fallback = fallback  # hands an op to the writer thread
        self._pgconn: Any = None
        self._fd = -1
        self._waiting: collections.deque[_Op] = collections.deque()
        self._in_flight: collections.deque[list[_Op | None]] = collections.deque()
        self._results: list[Any] = []  # the oldest group's statement results so far
        self._result: Any = None  # a statement's result, until its end marker
        self._writing = False  # waiting for the socket to take the rest of our output
        self._later = False  # a send is scheduled for the loop's next turn
        self._idle: list[asyncio.Future] = []
        self._ready: asyncio.Future | None = None
        self._closing = False
        self._encoders: tuple[list, list] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, prepare the statements; raise if that fails."""
        from .writer import _statements

        sql = _statements("postgresql")
        self._encoders = _encoders(sql)
        # A set-up group left by an earlier attempt that timed out holds no ops: drop it,
        # or its late answer would be taken for this attempt's.
        self._in_flight.clear()
        self._results, self._result = [], None
        params = {
            key: value
            for key, value in connection.get_connection_params().items()
            if key not in _NOT_LIBPQ and value is not None
        }
        pgconn = await self._open(params)
        pgconn.nonblocking = 1
        pgconn.enter_pipeline_mode()
        self._pgconn = pgconn
        # Kept: once libpq sees the connection lost it closes the socket, and
        # `pgconn.socket` raises, but the loop must still be told to stop watching it.
        self._fd = pgconn.socket
        self._ready = self.loop.create_future()
        pgconn.send_query_params(b"SET TIME ZONE 'UTC'", None)
        pgconn.send_prepare(_INSERT, _numbered(sql.insert_sql(1)).encode())
        pgconn.send_prepare(_UPDATE, _numbered(sql.update_sql).encode())
        pgconn.send_prepare(_TOUCH, _numbered(sql.touch_sql).encode())
        pgconn.pipeline_sync()
        self._in_flight.append([None, None, None, None])  # set-up: no ops to resolve
        self.loop.add_reader(self._fd, self._on_readable)
        self._flush()
        await asyncio.wait_for(asyncio.shield(self._ready), timeout=10)
        self.usable = True

    async def _open(self, params: dict[str, Any]) -> Any:
        """A libpq connection, made without blocking the loop.

        libpq's blocking connect holds the interpreter lock for the whole handshake:
        through a thread or not, a server slow to answer (or a host dropping packets)
        would stall every call the gateway serves. So the handshake is polled from the
        loop, host names are resolved by the loop, and each attempt is bounded.
        """
        from psycopg import pq
        from psycopg.conninfo import conninfo_attempts_async, make_conninfo

        failure = "no address to try"
        for attempt in await conninfo_attempts_async(params):
            pgconn = pq.PGconn.connect_start(make_conninfo(**attempt).encode())
            status = pq.PollingStatus.FAILED
            try:
                async with asyncio.timeout(CONNECT_SECONDS):
                    while (status := pgconn.connect_poll()) in _POLLING:
                        await self._wait_for_socket(pgconn.socket, status)
                if status == pq.PollingStatus.OK:
                    connected, pgconn = pgconn, None
                    return connected
                failure = pgconn.get_error_message().strip()
            except TimeoutError:
                failure = f"no answer within {CONNECT_SECONDS:g} s"
            except Exception as exc:  # the connection went away between polls
                failure = type(exc).__name__
            finally:
                if pgconn is not None:  # failed, timed out, or cancelled (a shutdown)
                    pgconn.finish()
        raise ConnectionError(f"audit: cannot connect for the loop writer: {failure}")

    async def _wait_for_socket(self, fd: int, status: Any) -> None:
        from psycopg import pq

        ready = self.loop.create_future()
        watch, unwatch = (
            (self.loop.add_writer, self.loop.remove_writer)
            if status == pq.PollingStatus.WRITING
            else (self.loop.add_reader, self.loop.remove_reader)
        )
        watch(fd, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            unwatch(fd)

    async def close(self, timeout: float = 10.0) -> None:
        """Write what is waiting, then close the connection."""
        self._closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle(), timeout)
        self.usable = False
        self._disconnect()

    async def idle(self) -> None:
        """Wait until everything submitted so far has been answered."""
        if not self._waiting and not self._in_flight:
            return
        waiter = self.loop.create_future()
        self._idle.append(waiter)
        await asyncio.shield(waiter)

    # --- what the AuditWriter uses ------------------------------------------------------

    def submit(self, op: _Op) -> None:
        """Send an insert at once (its call waits); a completion or a key touch at the
        loop's next turn, after the answer it belongs to has been sent."""
        self._waiting.append(op)
        if op.kind == "insert":
            if len(self._in_flight) < MAX_IN_FLIGHT and not self._writing:
                self._send()
        elif not self._later:
            self._later = True
            self.loop.call_soon(self._send_later)

    def _send_later(self) -> None:
        self._later = False
        if self._pgconn is not None and len(self._in_flight) < MAX_IN_FLIGHT and not self._writing:
            self._send()

    # --- sending ------------------------------------------------------------------------

    def _send(self) -> None:
        """Send what is waiting as groups, while fewer than MAX_IN_FLIGHT are in flight."""
        pgconn = self._pgconn
        try:
            while self._waiting and len(self._in_flight) < MAX_IN_FLIGHT:
                group = [found for op in self._take_group() if (found := self._encoded(op))]
                if not group:
                    continue
                for op, params in group:
                    pgconn.send_query_prepared(_STATEMENT[op.kind], params)
                pgconn.pipeline_sync()
                self._in_flight.append([op for op, _params in group])
                self.groups_sent += 1
            self._flush()
        except Exception as exc:
            self._broken(exc)

    def _take_group(self) -> list[_Op]:
        """The next group: what waits, up to MAX_GROUP statements; an op being retried
        alone after its group failed goes in a group of its own."""
        first = self._waiting.popleft()
        if first.alone:
            return [first]
        taken = [first]
        while self._waiting and len(taken) < MAX_GROUP and not self._waiting[0].alone:
            taken.append(self._waiting.popleft())
        group = [op for op in taken if op.kind != "touch"]
        # One UPDATE per key and group, for its latest use.
        touches = [op for op in taken if op.kind == "touch"]
        group.extend(
            _Op("touch", {"api_key_id": key, "when": when}) for key, when in latest_touches(touches)
        )
        return group

    def _encoded(self, op: _Op) -> tuple[_Op, list[bytes | None]] | None:
        """The op and its parameters; None if a value cannot be written (the op fails
        alone, the connection and the rest of the group are not concerned)."""
        inserts, updates = self._encoders
        values = op.fields
        try:
            if op.kind == "insert":
                params = [
                    encode(values[name]) if name in values else default
                    for name, default, encode in inserts
                ]
            elif op.kind == "update":
                params = [encode(values.get(name)) for name, encode in updates]
                params.append(b"%d" % op.pk)
            else:
                when = values["when"].isoformat().encode()
                params = [when, b"%d" % values["api_key_id"], when]
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
            logger.error("audit: %s cannot be written: %s", op.kind, type(exc).__name__)
            if op.kind == "insert":
                _fail(op)
            return None
        return op, params

    def _flush(self) -> None:
        """Push our output to the socket; wait for it to drain if it is full."""
        if self._pgconn.flush() == 0:
            if self._writing:
                self._writing = False
                self.loop.remove_writer(self._fd)
        elif not self._writing:
            self._writing = True
            self.loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            self._flush()
            if not self._writing:
                # libpq may have read answers while it waited to write; this also sends
                # what waits.
                self._on_readable()
        except Exception as exc:
            self._broken(exc)

    # --- receiving ----------------------------------------------------------------------

    def _on_readable(self) -> None:
        from psycopg import pq

        pgconn = self._pgconn
        if pgconn is None:
            return
        try:
            pgconn.consume_input()
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    if self._result is None:
                        break  # nothing more has arrived
                    self._results.append(self._result)  # the end of a statement's results
                    self._result = None
                elif result.status == pq.ExecStatus.PIPELINE_SYNC:
                    self._group_done()
                else:
                    self._result = result
            if pgconn.status != pq.ConnStatus.OK:
                raise ConnectionError("the audit connection was lost")
        except Exception as exc:
            self._broken(exc)
            return
        if self._waiting and not self._writing:
            self._send()
        if not self._waiting and not self._in_flight:
            for waiter in self._idle:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle.clear()

    def _group_done(self) -> None:
        from psycopg import pq

        group, results = self._in_flight.popleft(), self._results
        self._results = []
        good = len(results) == len(group) and all(
            result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
            for result in results
        )
        if group and group[0] is None:  # the set-up group
            if good:
                self._ready.set_result(None)
            else:
                self._ready.set_exception(ConnectionError(_error_of(results)))
            return
        if good:
            for op, result in zip(group, results, strict=True):
                if op.kind == "insert":
                    _settle(op, int(result.get_value(0, 0)))
            return
        if len(group) > 1:
            # The group was one transaction, and it rolled back: each op goes again alone.
            logger.warning("audit: a group of %d failed, retrying one by one", len(group))
            for op in reversed(group):
                op.alone = True
                self._waiting.appendleft(op)
            return
        op = group[0]
        logger.error("audit: %s failed: %s", op.kind, _error_of(results))
        if op.kind == "insert":
            _fail(op)

    def _broken(self, exc: BaseException) -> None:
        """The connection failed: hand everything unanswered to the thread, reconnect later."""
        if self._pgconn is None:
            return
        logger.warning("audit: the loop writer's connection failed (%s)", type(exc).__name__)
        self.usable = False
        self._disconnect()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(ConnectionError("the audit connection failed"))
        ops = [op for group in self._in_flight for op in group if op is not None]
        for op in ops:
            op.resumed = True  # sent, unanswered: PostgreSQL may have committed it
        ops.extend(self._waiting)
        self._in_flight.clear()
        self._waiting.clear()
        self._results, self._result = [], None
        for op in ops:
            op.alone = False
            self._fallback(op)
        for waiter in self._idle:
            if not waiter.done():
                waiter.set_result(None)  # what was waiting is the thread's now
        self._idle.clear()
        if not self._closing:
            self.loop.call_later(RECONNECT_SECONDS, self._reconnect_soon)

    def _reconnect_soon(self) -> None:
        if self._closing or self.usable:
            return
        task = self.loop.create_task(self._reconnect())
        task.add_done_callback(_ignore)

    async def _reconnect(self) -> None:
        try:
            await self.connect()
            if self._closing:  # the gateway shut down while this attempt was under way
                self.usable = False
                self._disconnect()
                return
            logger.info("audit: the loop writer reconnected")
        except Exception as exc:
            self._disconnect()
            logger.warning("audit: the loop writer cannot reconnect yet (%s)", type(exc).__name__)
            if not self._closing:
                self.loop.call_later(RECONNECT_SECONDS, self._reconnect_soon)

    def _disconnect(self) -> None:
        pgconn, self._pgconn = self._pgconn, None
        if pgconn is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.loop.remove_reader(self._fd)
            if self._writing:
                self.loop.remove_writer(self._fd)
        self._writing = False
        with contextlib.suppress(Exception):
            pgconn.finish()


def _settle(op: _Op, pk: int) -> None:
    op.pk = pk
    if not op.future.done():
        op.future.set_result(pk)


def _fail(op: _Op) -> None:
    from .writer import AuditUnavailable

    if not op.future.done():
        op.future.set_exception(AuditUnavailable())


def _ignore(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


def _error_of(results: list[Any]) -> str:
    """The failing statement's SQLSTATE and message, without its DETAIL (which may quote values)."""
    from psycopg import pq

    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            state = result.error_field(pq.DiagnosticField.SQLSTATE) or b""
            message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b""
            return f"{state.decode()} {message.decode(errors='replace')}"
    return "no result"


def _numbered(sql: str) -> str:
    """Django's %s placeholders as PostgreSQL's $1, $2, ..."""
    parts = sql.split("%s")
    numbered = [part + f"${index}" for index, part in enumerate(parts[:-1], 1)]
    return "".join(numbered) + parts[-1]


# --- values as PostgreSQL's text format -------------------------------------------------------


def _column_encoders(
    sql: _Statements, encoder: Callable[[models.Field, Callable], Callable]
) -> tuple[list, list]:
    """(name, encoded default, encode) per inserted column; (name, encode) per completion
    column; `encoder(field, prepare)` picks each column's encoding. The record's defaults
    are constants: encoded once, not per call."""
    inserts = [
        (field.attname, encode(_constant_default(field)), encode)
        for field, encode in ((field, encoder(field, prepare)) for field, prepare in sql.insert)
    ]
    updates = [(field.attname, encoder(field, prepare)) for field, prepare in sql.update]
    return inserts, updates


def _encoders(sql: _Statements) -> tuple[list, list]:
    """The column encoders for PostgreSQL's text format."""
    from .writer import _identity

    def encoder(field: models.Field, prepare: Callable[[Any], Any]) -> Callable[[Any], Any]:
        # Django's get_db_prep_save takes several microseconds a value (settings and
        # time-zone checks); these types are written as PostgreSQL reads them.
        if isinstance(field, models.JSONField):
            return _json
        if isinstance(field, models.DateTimeField):
            return _datetime
        if isinstance(field, models.DecimalField):
            return _decimal
        if prepare is _identity:
            return _text
        return lambda value: _text(prepare(value))

    return _column_encoders(sql, encoder)


def _constant_default(field: models.Field) -> Any:
    """The field's default, which must be the same for every record: it is encoded once."""
    if field.has_default() and callable(field.default) and field.default not in (list, dict):
        raise TypeError(
            f"CallRecord.{field.name}: a default computed per record needs encoding per call"
        )
    return field.get_default()


def _json(value: Any) -> bytes | None:
    return None if value is None else json_bytes(value)


def _datetime(value: datetime | None) -> bytes | None:
    if value is None:
        return None
    if value.tzinfo is None:  # as Django reads a naive datetime: in the default time zone
        value = timezone.make_aware(value)
    return value.isoformat().encode()


def _decimal(value: Decimal | None) -> bytes | None:
    return None if value is None else str(value).encode()


def _text(value: Any) -> bytes | None:
    kind = type(value)
    if value is None:
        return None
    if kind is str:
        # PostgreSQL would cut the text at a NUL without a word: U+FFFD in its place.
        return text_without_nul(value).encode()
    if kind is bool:
        return b"t" if value else b"f"
    if kind is int:
        return b"%d" % value
    if isinstance(value, datetime | date):
        return value.isoformat().encode()
    if isinstance(value, Decimal):
        return str(value).encode()
    return _text(str(value))


class SQLiteLoopWriter:
    """SQLite: the writes run on the loop itself, between its callbacks.

    An insert and its commit (WAL, synchronous=NORMAL) take ~30 µs in process, far
    less than waking the writer thread and trading the interpreter lock with it.
    What is submitted during one turn of the loop is written as one transaction at
    the start of the next. This connection never waits for SQLite's write lock
    (busy_timeout 0): if another writer holds it (the thread, a Celery task, the
    admin), the group goes to the writer thread, which waits in its own time.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fallback: Callable[[_Op], None]) -> None:
        self.loop = loop
        self.usable = False
        self.groups_sent = 0
        self._fallback = fallback
        self._db: Any = None
        self._waiting: list[_Op] = []
        self._scheduled = False
        self._idle: list[asyncio.Future] = []
        self._sql: tuple[str, str, str] = ("", "", "")
        self._encoders: tuple[list, list] | None = None

    async def connect(self) -> None:
        import sqlite3

        from .writer import _statements

        name = str(connection.settings_dict["NAME"])
        if name == ":memory:" or "mode=memory" in name:
            raise ConnectionError("an in-memory database is not shared with another connection")
        sql = _statements("sqlite")
        self._sql = (
            sql.insert_sql(1).replace("%s", "?"),
            sql.update_sql.replace("%s", "?"),
            sql.touch_sql.replace("%s", "?"),
        )
        self._encoders = _sqlite_encoders(sql)
        db = sqlite3.connect(
            name, isolation_level=None, check_same_thread=False, uri=name.startswith("file:")
        )
        db.execute("PRAGMA busy_timeout = 0")
        db.execute("PRAGMA synchronous = NORMAL")
        self._db = db
        self.usable = True

    async def close(self, timeout: float = 10.0) -> None:
        if self._waiting:
            self._write()
        self.usable = False
        self._disconnect()

    async def idle(self) -> None:
        if not self._scheduled:
            return
        waiter = self.loop.create_future()
        self._idle.append(waiter)
        await asyncio.shield(waiter)

    def submit(self, op: _Op) -> None:
        self._waiting.append(op)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._write)

    def _write(self) -> None:
        import sqlite3

        self._scheduled = False
        group, self._waiting = self._waiting, []
        try:
            if group:
                self._write_group(group)
        except sqlite3.OperationalError as exc:
            # Locked by another writer, or a schema problem: the thread waits for the
            # lock, retries one by one, and refuses what it still cannot write.
            logger.info("audit: SQLite refused the loop's write (%s)", type(exc).__name__)
            for op in group:
                self._fallback(op)
        except Exception:  # a statement or a value the driver refused
            if len(group) > 1:
                logger.warning("audit: a group of %d failed, retrying one by one", len(group))
            for op in group:
                self._write_alone(op)
        finally:
            for waiter in self._idle:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle.clear()

    def _write_alone(self, op: _Op) -> None:
        import sqlite3

        try:
            self._write_group([op])
        except sqlite3.OperationalError:
            self._fallback(op)
        except Exception as exc:
            logger.error("audit: %s failed: %s", op.kind, type(exc).__name__)
            if op.kind == "insert":
                _fail(op)

    def _write_group(self, group: list[_Op]) -> None:
        db = self._db
        insert_sql, update_sql, touch_sql = self._sql
        inserts, updates = self._encoders
        opened: list[tuple[_Op, int]] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for op in group:
                values = op.fields
                if op.kind == "insert":
                    row = db.execute(
                        insert_sql,
                        [
                            encode(values[name]) if name in values else default
                            for name, default, encode in inserts
                        ],
                    ).fetchone()
                    opened.append((op, row[0]))
                elif op.kind == "update":
                    params = [encode(values.get(name)) for name, encode in updates]
                    params.append(op.pk)
                    db.execute(update_sql, params)
            for key, latest in latest_touches([op for op in group if op.kind == "touch"]):
                when = _sqlite_datetime(latest)
                db.execute(touch_sql, [when, key, when])
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.groups_sent += 1
        for op, pk in opened:
            _settle(op, pk)

    def _disconnect(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):
                db.close()


def _sqlite_encoders(sql: _Statements) -> tuple[list, list]:
    """As `_encoders`, for SQLite: Django's preparers, but datetimes and decimals written
    directly as Django's SQLite backend writes them; defaults encoded once."""

    def encoder(field: models.Field, prepare: Callable[[Any], Any]) -> Callable[[Any], Any]:
        if isinstance(field, models.DateTimeField):
            return _sqlite_datetime
        if isinstance(field, models.DecimalField):
            return _sqlite_decimal
        return prepare

    return _column_encoders(sql, encoder)


def _sqlite_datetime(value: datetime | None) -> str | None:
    """UTC, naive, as `str()` gives it: what Django's SQLite backend stores."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return str(value)


def _sqlite_decimal(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
