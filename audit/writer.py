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
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, transaction

from . import batched
from .fields import COMPLETION_FIELDS
from .ops import AuditUnavailable, Op
from .statements import insert_rows, statements, update_rows

if TYPE_CHECKING:
    from .loopwriter import LoopWriter

logger = logging.getLogger(__name__)

_MAX_BATCH = 1000
LAZY_SECONDS = 0.005  # how long a completion may wait to share an insert's commit
SPOOL_RETRY_SECONDS = 1.0  # how often the spool is tried while the database is away
_WAKE = object()  # queued when completions arrive, so the writer starts its short wait
_TICK = object()  # the short wait ended with no insert


class AuditWriter:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        self._lazy: collections.deque[Op] = collections.deque()  # completions and touches
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
        from .loopwriter import LoopWriter
        from .sqlitewriter import SQLiteLoopWriter

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

    def _fallback(self, op: Op) -> None:
        """Take over an op the loop writer could not write (its connection broke)."""
        if op.kind == "insert":
            self.start()
            self._queue.put(op)  # it keeps its future and loop: the thread resolves them
        else:
            self._queue_later(op)

    def health(self) -> tuple[bool, dict[str, int]]:
        """(usable, depths) for readiness and metrics: usable while its thread runs and its
        spool has room; what waits to be written, by where it waits."""
        thread, loop_writer = self._thread, self._loop_writer
        depths = {
            "thread": self._queue.qsize() + len(self._lazy),
            "loop": loop_writer.depth() if loop_writer is not None else 0,
            "spool": len(self._spool),
        }
        room = (
            depths["spool"] < settings.MESHGATE_AUDIT_SPOOL_MAX
            or not settings.MESHGATE_AUDIT_SPOOL_MAX
        )
        return thread is not None and thread.is_alive() and room, depths

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
            op = Op("insert", fields, loop=loop_writer.loop)
            op.future = loop_writer.loop.create_future()
            loop_writer.submit(op)
            return op.future
        op = Op("insert", fields)
        self._enqueue(op)
        return op.future

    def complete(self, pk: int, fields: dict[str, Any]) -> None:
        """Queue the completion of an opened record (every field of COMPLETION_FIELDS).

        Not awaited: the answer need not wait for a commit, since the record already
        exists. A failure is logged; the record then stays "interrupted", which is
        what an auditor should see. `stop()` (process shutdown) writes what is queued.
        """
        self._later(Op("update", fields, pk=pk))

    async def flush(self) -> None:
        """Wait until everything queued before this call is written."""
        loop_writer = self._on_loop()
        if loop_writer is not None:
            await loop_writer.idle()
            if self._thread is None or not self._thread.is_alive():
                return  # nothing is queued for a thread that never started
        await self._submit(Op("flush", {}))

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
        op = Op("flush", {}, done=threading.Event())
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

    def later(self, name: str, item: Any) -> None:
        """Hand an item to a batched write another app registered (`audit.batched`), fire
        and forget: written with the next batch, nobody waits for it."""
        self._later(Op("batched", {"name": name, "item": item}))

    def _later(self, op: Op) -> None:
        loop_writer = self._on_loop()
        if loop_writer is not None:
            loop_writer.submit(op)
            return
        self._queue_later(op)

    def _queue_later(self, op: Op) -> None:
        """Queue a write nobody waits for: it rides with the next insert's commit, or is
        written within LAZY_SECONDS. At one call at a time that is one commit per call
        instead of two, and the next call's insert does not queue behind a completion."""
        self.start()
        self._lazy.append(op)
        if not self._lazy_signalled:
            self._lazy_signalled = True
            self._queue.put(_WAKE)

    async def _submit(self, op: Op) -> Any:
        self._enqueue(op)
        # Shielded: a caller cancelled by a client disconnect must not lose its write,
        # and the thread resolves the future whatever happens to the caller.
        return await asyncio.shield(op.future)

    def _enqueue(self, op: Op) -> None:
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

    def _write(self, batch: list[Op]) -> None:
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
        ops = [Op("insert", self._spool[index], resumed=True) for index in range(count)]
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

    def _write_batch(self, batch: list[Op]) -> None:
        inserts = [op for op in batch if op.kind == "insert"]
        updates = [op for op in batch if op.kind == "update"]
        others = batched.rows_by_write(
            [(op.fields["name"], op.fields["item"]) for op in batch if op.kind == "batched"],
            connection.vendor,
        )
        # Rows the loop writer had made of batched items before handing them over.
        others += [(op.fields["name"], op.fields["row"]) for op in batch if op.kind == "row"]
        if connection.vendor == "postgresql":
            self._write_postgresql(inserts, updates, others)
            return
        with transaction.atomic():
            if inserts:
                self._insert_many(inserts)
            if updates:
                self._update_many(updates)
            if others:
                self._write_others(others)

    @staticmethod
    def _write_postgresql(
        inserts: list[Op], updates: list[Op], others: list[tuple[str, list[Any]]]
    ) -> None:
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
        sql = statements(connection.vendor)
        with (
            raw.pipeline(),
            psycopg.Cursor(raw) as control,
            psycopg.Cursor(raw) as opened,
            psycopg.Cursor(raw) as resumed,
            psycopg.Cursor(raw) as other,
        ):
            # A resumed insert (see Op.resumed) takes its committed record, if there is one.
            openings = (
                (opened, sql.insert_sql(1), [op for op in inserts if not op.resumed]),
                (resumed, sql.insert_resumed_sql, [op for op in inserts if op.resumed]),
            )
            control.execute("BEGIN")
            for cursor, statement, ops in openings:
                if ops:
                    cursor.executemany(statement, insert_rows(sql, ops), returning=True)
            if updates:
                other.executemany(sql.update_sql, update_rows(sql, updates))
            for name, row in others:
                other.execute(batched.get(name).statement(connection.vendor), row)
            control.execute("COMMIT")
            for cursor, _statement, ops in openings:
                for op in ops:
                    op.pk = cursor.fetchone()[0]
                    cursor.nextset()

    @staticmethod
    def _insert_many(inserts: list[Op]) -> None:
        """Multi-row INSERT ... RETURNING, without building a model instance per row
        (SQLite; PostgreSQL runs one prepared single-row statement per record, see
        `_write_postgresql`: a multi-row statement is longer than psycopg caches, so
        it would be parsed anew in Python for every batch)."""
        sql = statements(connection.vendor)
        rows = insert_rows(sql, inserts)
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
    def _update_many(updates: list[Op]) -> None:
        """One prepared UPDATE run for every completion (`executemany`).

        Django's bulk_update builds a CASE WHEN per field and row: at 200 rows it
        spends seconds composing SQL. One parameterised statement, executed for many
        rows, is what the database is good at.
        """
        sql = statements(connection.vendor)
        with connection.cursor() as cursor:
            cursor.executemany(sql.update_sql, update_rows(sql, updates))

    @staticmethod
    def _write_others(others: list[tuple[str, list[Any]]]) -> None:
        with connection.cursor() as cursor:
            for name, row in others:
                cursor.execute(batched.get(name).statement(connection.vendor), row)

    @staticmethod
    def _reset_connection() -> None:
        try:
            if connection.in_atomic_block:
                return
            connection.close()
        except Exception:
            logger.debug("audit: closing a broken connection failed", exc_info=True)

    @staticmethod
    def _resolve(op: Op) -> None:
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


writer = AuditWriter()

__all__ = ["COMPLETION_FIELDS", "AuditUnavailable", "AuditWriter", "writer"]
