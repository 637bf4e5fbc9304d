"""The audit writer: one thread per process that writes CallRecords in batches.

Calls hand it inserts (a record opened before the upstream call, or a refused
call's complete record) and completions, and await an asyncio future for their
batch. The thread takes everything queued, writes it with one `bulk_create` and
one `bulk_update` in one transaction, and resolves the futures: at a thousand
calls a second that is a few statements and commits a second instead of two
thousand. It has its own database connection, so the event loop never blocks on
the database. If a batch fails, its items are retried one by one so a single
bad row cannot sink the others, and the callers whose insert still failed get
`AuditUnavailable` (the gateway answers 503 and sends nothing upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from .models import CallRecord

logger = logging.getLogger(__name__)

# Fields a completion sets: every completion sets all of them, so one bulk_update covers a batch.
COMPLETION_FIELDS = (
    "outcome",
    "status_code",
    "error_message",
    "first_token_at",
    "ended_at",
    "latency_ms",
    "ttft_ms",
    "attempts",
    "llm_id",
    "connection_id",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "tokens_estimated",
    "cost",
    "input_price",
    "output_price",
    "cached_input_price",
    "response_body",
)
_MAX_BATCH = 1000


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


class AuditWriter:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # how many batches were written (the tests and the bench read it)

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

    # --- what calls use -----------------------------------------------------------------

    async def insert(self, fields: dict[str, Any]) -> int:
        """Write a new record and return its id once committed; AuditUnavailable if it failed."""
        return await self._submit(_Op("insert", fields))

    def complete(self, pk: int, fields: dict[str, Any]) -> None:
        """Queue the completion of an opened record (every field of COMPLETION_FIELDS).

        Not awaited: the answer need not wait for a commit, since the record already
        exists. A failure is logged; the record then stays "interrupted", which is
        what an auditor should see. `stop()` (process shutdown) writes what is queued.
        """
        self.start()
        self._queue.put(_Op("update", fields, pk=pk))

    async def flush(self) -> None:
        """Wait until everything queued before this call is written."""
        await self._submit(_Op("flush", {}))

    def touch_key(self, api_key_id: int, when: datetime) -> None:
        """Record an API key's last use, fire and forget (a queryset update, no signal)."""
        self.start()
        self._queue.put(_Op("touch", {"api_key_id": api_key_id, "when": when}))

    async def _submit(self, op: _Op) -> Any:
        self.start()
        op.loop = asyncio.get_running_loop()
        op.future = op.loop.create_future()
        self._queue.put(op)
        # Shielded: a caller cancelled by a client disconnect must not lose its write,
        # and the thread resolves the future whatever happens to the caller.
        return await asyncio.shield(op.future)

    # --- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                op = self._queue.get()
                if op is None:
                    break
                batch = [op]
                stop = False
                while len(batch) < _MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                self._write(batch)
                if stop:
                    break
        finally:
            connection.close()

    def _write(self, batch: list[_Op]) -> None:
        try:
            self._write_batch(batch)
            self.batches += 1
        except Exception:
            logger.warning("audit: a batch of %d failed, retrying one by one", len(batch))
            self._reset_connection()
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

    def _write_batch(self, batch: list[_Op]) -> None:
        inserts = [op for op in batch if op.kind == "insert"]
        updates = [op for op in batch if op.kind == "update"]
        touches = [op for op in batch if op.kind == "touch"]
        with transaction.atomic():
            if inserts:
                self._insert_many(inserts)
            if updates:
                self._update_many(updates)
            if touches:
                self._touch(touches)

    @staticmethod
    def _insert_many(inserts: list[_Op]) -> None:
        """Multi-row INSERT ... RETURNING, the ids matched back by request id.

        What bulk_create does, without building a model instance per row: at one
        record per call that is most of the writer's time, and the writer shares
        the interpreter lock with the event loop.
        """
        meta = CallRecord._meta
        fields = [field for field in meta.concrete_fields if not field.primary_key]
        quote = connection.ops.quote_name
        columns = ", ".join(quote(field.column) for field in fields)
        row = "(" + ", ".join(["%s"] * len(fields)) + ")"
        # SQLite allows 32,766 parameters a statement; stay well below.
        per_statement = max(1, 20_000 // len(fields))
        with connection.cursor() as cursor:
            for start in range(0, len(inserts), per_statement):
                chunk = inserts[start : start + per_statement]
                params: list[Any] = []
                for op in chunk:
                    values = op.fields
                    for field in fields:
                        value = (
                            values[field.attname]
                            if field.attname in values
                            else field.get_default()
                        )
                        params.append(field.get_db_prep_save(value, connection))
                # Only the model's own column names are interpolated; every value is a parameter.
                sql = (
                    f"INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608
                    f"VALUES {', '.join([row] * len(chunk))} "
                    f"RETURNING {quote(meta.pk.column)}, {quote('request_id')}"
                )
                cursor.execute(sql, params)
                ids = {request_id: pk for pk, request_id in cursor.fetchall()}
                for op in chunk:
                    op.pk = ids[op.fields["request_id"]]

    @staticmethod
    def _update_many(updates: list[_Op]) -> None:
        """One prepared UPDATE run for every completion (`executemany`).

        Django's bulk_update builds a CASE WHEN per field and row: at 200 rows it
        spends seconds composing SQL. One parameterised statement, executed for many
        rows, is what the database is good at (psycopg 3 pipelines it).
        """
        fields = [CallRecord._meta.get_field(name) for name in COMPLETION_FIELDS]
        quote = connection.ops.quote_name
        assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
        # Only the model's own column names are interpolated; every value is a parameter.
        sql = (
            f"UPDATE {quote(CallRecord._meta.db_table)} SET {assignments} "  # noqa: S608
            f"WHERE {quote(CallRecord._meta.pk.column)} = %s"
        )
        rows = []
        for op in updates:
            row = [
                field.get_db_prep_save(op.fields.get(field.attname), connection) for field in fields
            ]
            row.append(op.pk)
            rows.append(row)
        with connection.cursor() as cursor:
            cursor.executemany(sql, rows)

    @staticmethod
    def _touch(touches: list[_Op]) -> None:
        from django.apps import apps

        # Looked up by name: audit does not import the gateway (see ARCHITECTURE.md).
        api_key_model = apps.get_model("gateway", "ApiKey")
        latest: dict[int, datetime] = {}
        for op in touches:
            key_id, when = op.fields["api_key_id"], op.fields["when"]
            latest[key_id] = max(when, latest.get(key_id, when))
        for key_id, when in latest.items():
            # .update(), not .save(): a save fires the signal that flushes every worker's keys.
            api_key_model.objects.filter(pk=key_id).update(last_used_at=when)

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


writer = AuditWriter()
