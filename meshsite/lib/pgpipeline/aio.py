"""The same pipeline on psycopg's AsyncConnection in pipeline mode (the library side of the
A/B, `bench/ab.py`).

Each group is a task: its statements queued in `conn.pipeline()`, then a Sync; the
tasks run one after another on the connection (psycopg serialises them), at most as
many in flight as the owner allows. Parameters are given as text, of unknown type,
so PostgreSQL reads them as the prepared statement's columns, as the libpq side does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import psycopg

from .base import Params, PipelineBase, StatementResult


class PsycopgPipeline(PipelineBase):
    def _init(self) -> None:
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._sql: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def can_send(self) -> bool:
        return self._conn is not None

    @property
    def backend_pid(self) -> int:
        return self._conn.info.backend_pid if self._conn is not None else 0

    async def connect(
        self, params: dict[str, Any], setup: Sequence[str], prepared: dict[str, str]
    ) -> None:
        try:
            conn = await psycopg.AsyncConnection.connect(
                autocommit=True,
                prepare_threshold=0,
                connect_timeout=max(1, round(self.connect_seconds)),
                **params,
            )
        except psycopg.Error as exc:
            raise self.connect_error(type(exc).__name__) from None
        try:
            for sql in setup:
                await conn.execute(sql.encode())
        except psycopg.Error as exc:
            await conn.close()
            raise ConnectionError(type(exc).__name__) from None
        self._sql = dict(prepared)
        self._conn = conn

    def send_group(self, statements: Sequence[tuple[str, Params]]) -> None:
        if self._conn is None:
            raise self.closed_error()
        self._in_flight += 1
        task = self.loop.create_task(self._run(self._conn, list(statements)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, conn: psycopg.AsyncConnection[Any], statements: list[tuple[str, Params]]
    ) -> None:
        results: list[StatementResult] = []
        try:
            async with self._lock:
                cursors = []
                try:
                    async with conn.pipeline() as pipeline:
                        for name, params in statements:
                            cursor = conn.cursor()
                            values = [None if p is None else p.decode() for p in params]
                            await cursor.execute(self._sql[name], values, prepare=True)
                            cursors.append(cursor)
                        await pipeline.sync()
                    for cursor in cursors:
                        value = None
                        if cursor.description:
                            row = await cursor.fetchone()
                            if row is not None and row[0] is not None:  # NULL is None
                                value = str(row[0]).encode()
                        results.append(StatementResult(True, value))
                except psycopg.errors.Error as exc:
                    if conn.closed or conn.broken:
                        raise
                    error = f"{exc.sqlstate or ''} {type(exc).__name__}"
                    results = [StatementResult(False, error=error)] * len(statements)
        except Exception as exc:
            self._in_flight -= 1
            if self._conn is conn:
                self.close()
                self._on_broken(exc)
            return
        self._in_flight -= 1
        if self._conn is not conn:
            return  # closed meanwhile: unanswered
        self._on_group(results)
        self._on_progress()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._in_flight = 0
        for task in self._tasks:
            task.cancel()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.pgconn.finish()
