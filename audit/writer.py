"""The audit writer: one thread per process that writes CallRecords in batches.

Calls hand it inserts (a record opened before the upstream call, or a refused
call's complete record) and await an asyncio future for their batch, and
completions, which nobody awaits. The thread takes everything queued, writes
the inserts and the completions in one transaction (a prepared statement run
for each), and resolves the futures: at a thousand calls a second that is a
few commits a second instead of two thousand. It has its own database
connection, so the event loop never blocks on the database. Completions (and
key touches) join the next insert's batch, or are written within LAZY_SECONDS,
so a lone call costs one commit, not two, and its successor's insert never
queues behind its completion. If a batch fails, its items are retried one by
one so a single bad row cannot sink the others, and the callers whose insert still failed get
`AuditUnavailable` (the gateway answers 503 and sends nothing upstream).

On PostgreSQL, calls on the gateway's serving loop write through the loop writer
instead (`attach_loop`, audit.loopwriter), which hands its work back to this
thread if its connection breaks.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from django.conf import settings
from django.db import connection, models, transaction

from .fields import COMPLETION_FIELDS
from .models import CallRecord

if TYPE_CHECKING:
    from .loopwriter import LoopWriter

logger = logging.getLogger(__name__)

_MAX_BATCH = 1000
LAZY_SECONDS = 0.005  # how long a completion may wait to share an insert's commit
SPOOL_RETRY_SECONDS = 1.0  # how often the spool is tried while the database is away
_WAKE = object()  # queued when completions arrive, so the writer starts its short wait
_TICK = object()  # the short wait ended with no insert


class AuditUnavailable(Exception):
    """The record could not be written: the call must not go upstream."""


@dataclass
class _Op:
    kind: str  # "insert", "update", "touch" or "flush"
    fields: dict[str, Any]
    pk: int | None = None
    future: asyncio.Future | None = None
    loop: asyncio.AbstractEventLoop | None = None
    error: BaseException | None = field(default=None, repr=False)
    done: threading.Event | None = None  # for a sync caller waiting (`drain`)
    alone: bool = False  # the loop writer retries it in a group of its own
    # Sent on a connection that broke before its answer came: PostgreSQL may have
    # committed it. Its retry then takes the committed record instead of failing on it.
    resumed: bool = False


class AuditWriter:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._lazy: collections.deque[_Op] = collections.deque()  # completions and touches
        self._lazy_signalled = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._loop_writer: LoopWriter | None = None  # PostgreSQL, on the gateway's loop
        self.batches = 0  # how many batches were written (the tests and the bench read it)
        # Complete records of calls refused while the database was away (see `spool`).
        self._spool: collections.deque[dict[str, Any]] = collections.deque()
        self._spool_retry_at = 0.0
        self.spool_written = 0  # in the current outage
        self.spool_dropped = 0  # in the current outage: the spool was full, or a record refused

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout)

    async def attach_loop(self) -> None:
        """Write from the running loop itself (see audit.loopwriter): on PostgreSQL over a
        pipelined connection of its own, on SQLite between the loop's callbacks.

        The gateway's lifespan calls it on its serving loop. If the connection cannot
        be made, calls keep using the thread.
        """
        if self._loop_writer is not None:
            return
        from .loopwriter import LoopWriter, SQLiteLoopWriter

        kind = {"postgresql": LoopWriter, "sqlite": SQLiteLoopWriter}.get(connection.vendor)
        if kind is None:
            return
        loop_writer = kind(asyncio.get_running_loop(), self._fallback)
        try:
            await loop_writer.connect()
        except Exception as exc:
            loop_writer._disconnect()
            logger.warning("audit: writing through the thread only (%s)", type(exc).__name__)
            return
        self._loop_writer = loop_writer

    async def detach_loop(self) -> None:
        """Write what the loop writer holds, and close it (the gateway's shutdown)."""
        loop_writer, self._loop_writer = self._loop_writer, None
        if loop_writer is not None:
            await loop_writer.close()

    def _on_loop(self) -> LoopWriter | None:
        """The loop writer, if it is usable and we are on its loop."""
        loop_writer = self._loop_writer
        if loop_writer is None or not loop_writer.usable:
            return None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return loop_writer if running is loop_writer.loop else None

    def _fallback(self, op: _Op) -> None:
        """Take over an op the loop writer could not write (its connection broke)."""
        if op.kind == "insert":
            self.start()
            self._queue.put(op)  # it keeps its future and loop: the thread resolves them
        else:
            self._queue_later(op)

    # --- what calls use -----------------------------------------------------------------

    async def insert(self, fields: dict[str, Any]) -> int:
        """Write a new record and return its id once committed; AuditUnavailable if it failed."""
        return await asyncio.shield(self.insert_soon(fields))

    def insert_soon(self, fields: dict[str, Any]) -> asyncio.Future:
        """Queue a new record now; the future gives its id once committed (or AuditUnavailable).

        For a caller with other work to do meanwhile. Await it through `asyncio.shield`:
        a cancelled caller must not cancel the future the writer thread resolves.
        """
        loop_writer = self._on_loop()
        if loop_writer is not None:
            op = _Op("insert", fields, loop=loop_writer.loop)
            op.future = loop_writer.loop.create_future()
            loop_writer.submit(op)
            return op.future
        op = _Op("insert", fields)
        self._enqueue(op)
        return op.future

    def complete(self, pk: int, fields: dict[str, Any]) -> None:
        """Queue the completion of an opened record (every field of COMPLETION_FIELDS).

        Not awaited: the answer need not wait for a commit, since the record already
        exists. A failure is logged; the record then stays "interrupted", which is
        what an auditor should see. `stop()` (process shutdown) writes what is queued.
        """
        self._later(_Op("update", fields, pk=pk))

    async def flush(self) -> None:
        """Wait until everything queued before this call is written."""
        loop_writer = self._on_loop()
        if loop_writer is not None:
            await loop_writer.idle()
            if self._thread is None or not self._thread.is_alive():
                return  # nothing is queued for a thread that never started
        await self._submit(_Op("flush", {}))

    def drain(self, timeout: float = 10.0) -> None:
        """Block until everything queued before this call is written (sync code, tests)."""
        loop_writer = self._loop_writer
        if loop_writer is not None and loop_writer.loop.is_running() and not _on(loop_writer.loop):
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(loop_writer.idle(), loop_writer.loop).result(
                    timeout
                )
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        op = _Op("flush", {}, done=threading.Event())
        self._queue.put(op)
        op.done.wait(timeout)

    def spool(self, fields: dict[str, Any]) -> None:
        """Keep the complete record of a call refused because the database was away, and
        write it once the database answers again (the thread tries every
        SPOOL_RETRY_SECONDS). At most MESHGATE_AUDIT_SPOOL_MAX are kept; the rest are
        counted, and logged when the spool is written."""
        if len(self._spool) >= settings.MESHGATE_AUDIT_SPOOL_MAX:
            if self.spool_dropped == 0:
                logger.error("audit: the spool is full; refused calls are no longer kept")
            self.spool_dropped += 1
            return
        self._spool.append(fields)
        self.start()
        self._queue.put(_WAKE)

    def touch_key(self, api_key_id: int, when: datetime) -> None:
        """Record an API key's last use, fire and forget (a plain UPDATE, no signal)."""
        self._later(_Op("touch", {"api_key_id": api_key_id, "when": when}))

    def _later(self, op: _Op) -> None:
        loop_writer = self._on_loop()
        if loop_writer is not None:
            loop_writer.submit(op)
            return
        self._queue_later(op)

    def _queue_later(self, op: _Op) -> None:
        """Queue a write nobody waits for: it rides with the next insert's commit, or is
        written within LAZY_SECONDS. At one call at a time that is one commit per call
        instead of two, and the next call's insert does not queue behind a completion."""
        self.start()
        self._lazy.append(op)
        if not self._lazy_signalled:
            self._lazy_signalled = True
            self._queue.put(_WAKE)

    async def _submit(self, op: _Op) -> Any:
        self._enqueue(op)
        # Shielded: a caller cancelled by a client disconnect must not lose its write,
        # and the thread resolves the future whatever happens to the caller.
        return await asyncio.shield(op.future)

    def _enqueue(self, op: _Op) -> None:
        self.start()
        op.loop = asyncio.get_running_loop()
        op.future = op.loop.create_future()
        self._queue.put(op)

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                if self._spool and time.monotonic() >= self._spool_retry_at:
                    self._write_spool()
                # With completions waiting, wait a moment for an insert to share their commit.
                timeout = LAZY_SECONDS if self._lazy else None
                if self._spool and timeout is None:
                    timeout = max(0.0, self._spool_retry_at - time.monotonic())
                try:
                    op = self._queue.get(timeout=timeout)
                except queue.Empty:
                    op = _TICK
                stop = op is None
                batch = [] if op is None or op is _WAKE or op is _TICK else [op]
                while not stop and len(batch) < _MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                    elif more is not _WAKE:
                        batch.append(more)
                if op is _WAKE and not batch:
                    continue  # completions arrived: wait for company, at most LAZY_SECONDS
                # Cleared before taking them: a completion queued meanwhile signals again.
                self._lazy_signalled = False
                while self._lazy and len(batch) < 2 * _MAX_BATCH:
                    batch.append(self._lazy.popleft())
                if batch:
                    self._write(batch)
                if stop:
                    break
        finally:
            connection.close()

    def _write(self, batch: list[_Op]) -> None:
        try:
            self._write_batch(batch)
            self.batches += 1
        except Exception as exc:
            logger.warning("audit: a batch of %d failed, retrying one by one", len(batch))
            self._reset_connection()
            if _connection_lost(exc):
                # It may have been lost after COMMIT: the retries take what was committed.
                for op in batch:
                    op.resumed = True
            for op in batch:
                try:
                    self._write_batch([op])
                except Exception as exc:
                    self._reset_connection()
                    op.error = exc
                    if op.kind in ("insert", "update"):
                        logger.error(
                            "audit: %s failed: %s", op.kind, type(exc).__name__, exc_info=False
                        )
        for op in batch:
            self._resolve(op)

    def _write_spool(self) -> None:
        """Write the spooled records if the database answers; keep them if it does not."""
        self._spool_retry_at = time.monotonic() + SPOOL_RETRY_SECONDS
        count = min(len(self._spool), _MAX_BATCH)
        # Resumed inserts: a record committed after all is taken, not written twice.
        ops = [_Op("insert", self._spool[index], resumed=True) for index in range(count)]
        try:
            self._write_batch(ops)
            written = count
        except Exception as exc:
            self._reset_connection()
            if _connection_lost(exc):
                return  # still away
            written = 0
            for op in ops:  # one the database refuses must not hold the others back
                try:
                    self._write_batch([op])
                    written += 1
                except Exception as exc:
                    self._reset_connection()
                    if _connection_lost(exc):
                        break  # away again: the rest stays in the spool
                    self.spool_dropped += 1
                self._spool.popleft()
            count = 0
        for _ in range(count):
            self._spool.popleft()
        self.spool_written += written
        if not self._spool:
            logger.warning(
                "audit: %d records of calls refused while the database was away were written; "
                "%d could not be kept",
                self.spool_written,
                self.spool_dropped,
            )
            self.spool_written = self.spool_dropped = 0

    def _write_batch(self, batch: list[_Op]) -> None:
        inserts = [op for op in batch if op.kind == "insert"]
        updates = [op for op in batch if op.kind == "update"]
        touches = [op for op in batch if op.kind == "touch"]
        if connection.vendor == "postgresql":
            self._write_postgresql(inserts, updates, touches)
            return
        with transaction.atomic():
            if inserts:
                self._insert_many(inserts)
            if updates:
                self._update_many(updates)
            if touches:
                self._touch(touches)

    @staticmethod
    def _write_postgresql(inserts: list[_Op], updates: list[_Op], touches: list[_Op]) -> None:
        """The whole batch in one round trip: BEGIN, the statements, COMMIT, pipelined.

        Django's transaction would send BEGIN with the first statement and COMMIT
        after the last result came back: a second round trip, and another wake-up
        of this thread and of the database server for every batch, which at one call
        at a time is most of a call's added latency. If a statement fails, the
        server skips the rest and turns the COMMIT into a ROLLBACK; psycopg raises,
        and `_write` retries the batch's items one by one.
        """
        import psycopg

        connection.ensure_connection()
        raw = connection.connection
        raw.autocommit = True  # BEGIN and COMMIT are ours
        sql = _statements(connection.vendor)
        with (
            raw.pipeline(),
            psycopg.Cursor(raw) as control,
            psycopg.Cursor(raw) as opened,
            psycopg.Cursor(raw) as resumed,
            psycopg.Cursor(raw) as other,
        ):
            # A resumed insert (see _Op.resumed) takes its committed record, if there is one.
            openings = (
                (opened, sql.insert_sql(1), [op for op in inserts if not op.resumed]),
                (resumed, sql.insert_resumed_sql, [op for op in inserts if op.resumed]),
            )
            control.execute("BEGIN")
            for cursor, statement, ops in openings:
                if ops:
                    cursor.executemany(statement, _insert_rows(sql, ops), returning=True)
            if updates:
                other.executemany(sql.update_sql, _update_rows(sql, updates))
            if touches:
                other.executemany(sql.touch_sql, _touch_rows(sql, touches))
            control.execute("COMMIT")
            for cursor, _statement, ops in openings:
                for op in ops:
                    op.pk = cursor.fetchone()[0]
                    cursor.nextset()

    @staticmethod
    def _insert_many(inserts: list[_Op]) -> None:
        """Multi-row INSERT ... RETURNING, without building a model instance per row
        (SQLite; PostgreSQL runs one prepared single-row statement per record, see
        `_write_postgresql`: a multi-row statement is longer than psycopg caches, so
        it would be parsed anew in Python for every batch)."""
        sql = _statements(connection.vendor)
        rows = _insert_rows(sql, inserts)
        # SQLite allows 32,766 parameters a statement; stay well below.
        per_statement = max(1, 20_000 // len(rows[0]))
        with connection.cursor() as cursor:
            for start in range(0, len(inserts), per_statement):
                chunk = inserts[start : start + per_statement]
                params = [v for values in rows[start : start + per_statement] for v in values]
                cursor.execute(sql.insert_sql(len(chunk)), params)
                ids = {request_id: pk for pk, request_id in cursor.fetchall()}
                for op in chunk:
                    op.pk = ids[op.fields["request_id"]]

    @staticmethod
    def _update_many(updates: list[_Op]) -> None:
        """One prepared UPDATE run for every completion (`executemany`).

        Django's bulk_update builds a CASE WHEN per field and row: at 200 rows it
        spends seconds composing SQL. One parameterised statement, executed for many
        rows, is what the database is good at.
        """
        sql = _statements(connection.vendor)
        with connection.cursor() as cursor:
            cursor.executemany(sql.update_sql, _update_rows(sql, updates))

    @staticmethod
    def _touch(touches: list[_Op]) -> None:
        sql = _statements(connection.vendor)
        with connection.cursor() as cursor:
            cursor.executemany(sql.touch_sql, _touch_rows(sql, touches))

    @staticmethod
    def _reset_connection() -> None:
        try:
            if connection.in_atomic_block:
                return
            connection.close()
        except Exception:
            logger.debug("audit: closing a broken connection failed", exc_info=True)

    @staticmethod
    def _resolve(op: _Op) -> None:
        if op.done is not None:
            op.done.set()
        if op.future is None or op.loop is None:
            return

        def settle() -> None:
            if op.future.done():
                return
            if op.error is not None:
                op.future.set_exception(AuditUnavailable())
            else:
                op.future.set_result(op.pk)

        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            op.loop.call_soon_threadsafe(settle)


def _connection_lost(exc: BaseException) -> bool:
    """Whether a batch failed with its connection, rather than on one of its statements."""
    import psycopg
    from django.db import InterfaceError, OperationalError

    lost = (psycopg.OperationalError, psycopg.InterfaceError, OperationalError, InterfaceError)
    return isinstance(exc, lost) and not isinstance(exc, psycopg.errors.QueryCanceled)


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


# --- statements and value adaptation, built once per database vendor ---------------------------

# Field types whose database value is the Python value itself (ints, strings, booleans):
# Django's get_db_prep_save would only call through several layers to return it unchanged.
_AS_IS = (
    models.IntegerField,  # and its small, big and positive kinds
    models.CharField,
    models.TextField,
    models.BooleanField,
)


@dataclass
class _Statements:
    """The writer's SQL and value adapters for one database vendor, built once."""

    insert: list[tuple[models.Field, Any]]  # (field, adapter) per inserted column
    update: list[tuple[models.Field, Any]]  # ... per COMPLETION_FIELDS column
    insert_head: str  # INSERT INTO ... (columns) VALUES
    insert_row: str  # (%s, ...)
    insert_returning: str
    insert_resumed_sql: str  # one row; on its request id's conflict, the existing row's id
    update_sql: str
    touch_sql: str
    touch_field: models.Field

    def insert_sql(self, rows: int) -> str:
        return f"{self.insert_head}{', '.join([self.insert_row] * rows)} {self.insert_returning}"


_statements_by_vendor: dict[str, _Statements] = {}


def _statements(vendor: str) -> _Statements:
    found = _statements_by_vendor.get(vendor)
    if found is None:
        found = _statements_by_vendor[vendor] = _build_statements(vendor)
    return found


def _build_statements(vendor: str) -> _Statements:
    from django.apps import apps

    meta = CallRecord._meta
    quote = connection.ops.quote_name
    insert = [(f, _preparer(f, vendor)) for f in meta.concrete_fields if not f.primary_key]
    update = [(f, _preparer(f, vendor)) for f in map(meta.get_field, COMPLETION_FIELDS)]
    table, pk = quote(meta.db_table), quote(meta.pk.column)
    columns = ", ".join(quote(field.column) for field, _ in insert)
    assignments = ", ".join(f"{quote(field.column)} = %s" for field, _ in update)
    # Looked up by name: audit does not import the gateway (see ARCHITECTURE.md). A plain
    # UPDATE, not .save(): a save fires the signal that flushes every worker's keys.
    key_meta = apps.get_model("gateway", "ApiKey")._meta
    touch_field = key_meta.get_field("last_used_at")
    # Only the models' own table and column names are interpolated; every value is a parameter.
    insert_head = f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608
    insert_row = "(" + ", ".join(["%s"] * len(insert)) + ")"
    insert_returning = f"RETURNING {pk}, {quote('request_id')}"
    return _Statements(
        insert=insert,
        update=update,
        insert_head=insert_head,
        insert_row=insert_row,
        insert_returning=insert_returning,
        # Request ids are the gateway's own and unique per call: a conflict on one is
        # this call's record, committed before its connection broke. The no-op update
        # makes RETURNING give that row (DO NOTHING would return none).
        insert_resumed_sql=(
            f"{insert_head}{insert_row} ON CONFLICT ({quote('request_id')}) DO UPDATE SET "
            f"{quote('request_id')} = EXCLUDED.{quote('request_id')} {insert_returning}"
        ),
        update_sql=f"UPDATE {table} SET {assignments} WHERE {pk} = %s",  # noqa: S608
        # Only ever forward in time (writes may land out of order), and no row
        # rewritten when the time is not newer.
        touch_sql=(
            f"UPDATE {quote(key_meta.db_table)} SET {quote(touch_field.column)} = %s "  # noqa: S608
            f"WHERE {quote(key_meta.pk.column)} = %s AND ({quote(touch_field.column)} IS NULL "
            f"OR {quote(touch_field.column)} < %s)"
        ),
        touch_field=touch_field,
    )


def _pg_json_text(value: Any) -> str:
    return json_bytes(value).decode()


def _json_text(value: Any) -> str:
    """JSON as Django's JSONField would store it, with orjson (several times faster)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def json_bytes(value: Any) -> bytes:
    """JSON for PostgreSQL's jsonb, which cannot hold a NUL character (\\u0000): a call
    whose prompt holds one is still recorded, with U+FFFD in its place."""
    try:
        dumped = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        dumped = json.dumps(value).encode()
    if b"\\u0000" in dumped:
        return json_bytes(_without_nul(value))
    return dumped


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(item) for item in value]
    return value


def text_without_nul(value: Any) -> Any:
    """PostgreSQL's text cannot hold NUL either: U+FFFD in its place."""
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _preparer(field: models.Field, vendor: str):
    """A function from a Python value to the value the driver is given for `field`."""
    if isinstance(field, models.JSONField) and field.encoder is None:
        if vendor == "postgresql":
            from psycopg.types.json import Jsonb

            return lambda value: None if value is None else Jsonb(value, dumps=_pg_json_text)
        return lambda value: None if value is None else _json_text(value)
    if isinstance(field, models.CharField | models.TextField) and vendor == "postgresql":
        return text_without_nul
    if isinstance(field, _AS_IS) and not field.is_relation:
        return _identity
    if isinstance(field, models.GenericIPAddressField):
        # An IPv4 address is stored as given; IPv6 ones are normalized by Django.
        def prepare_ip(value: Any) -> Any:
            if value is None or (isinstance(value, str) and ":" not in value):
                return value or None
            return field.get_db_prep_save(value, connection)

        return prepare_ip
    if isinstance(field, models.ForeignKey) and isinstance(field.target_field, models.AutoField):
        return _identity
    return lambda value: field.get_db_prep_save(value, connection)


def _identity(value: Any) -> Any:
    return value


def _insert_rows(statements: _Statements, inserts: list[_Op]) -> list[list[Any]]:
    rows = []
    for op in inserts:
        values = op.fields
        rows.append(
            [
                prepare(values[field.attname] if field.attname in values else field.get_default())
                for field, prepare in statements.insert
            ]
        )
    return rows


def _update_rows(statements: _Statements, updates: list[_Op]) -> list[list[Any]]:
    rows = []
    for op in updates:
        values = op.fields
        row = [prepare(values.get(field.attname)) for field, prepare in statements.update]
        row.append(op.pk)
        rows.append(row)
    return rows


def latest_touches(touches: list[_Op]) -> list[tuple[int, datetime]]:
    """(key id, latest use) once per key, in key order: two writers touching the same
    keys then lock their rows in the same order and cannot deadlock."""
    latest: dict[int, datetime] = {}
    for op in touches:
        key_id, when = op.fields["api_key_id"], op.fields["when"]
        latest[key_id] = max(when, latest.get(key_id, when))
    return sorted(latest.items())


def _touch_rows(statements: _Statements, touches: list[_Op]) -> list[list[Any]]:
    field = statements.touch_field
    rows = []
    for key_id, latest in latest_touches(touches):
        when = field.get_db_prep_save(latest, connection)
        rows.append([when, key_id, when])
    return rows


writer = AuditWriter()
