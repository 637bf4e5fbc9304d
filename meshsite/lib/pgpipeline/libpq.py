"""A libpq connection in pipeline mode, non-blocking, watched by an asyncio loop.

No thread, no hand-off: the loop's reader callback consumes answers as they arrive
(`add_reader`), and output that the socket cannot take at once waits for it to drain
(`add_writer`). The handshake is polled from the loop too: libpq's blocking connect
holds the interpreter lock for the whole handshake, so a server slow to answer (or a
host dropping packets) would stall everything else on the loop. Each address tried
is bounded by `connect_seconds`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Sequence
from typing import Any

from psycopg import pq
from psycopg.conninfo import conninfo_attempts_async, make_conninfo

from .base import Params, PipelineBase, StatementResult, numbered

_POLLING = (pq.PollingStatus.READING, pq.PollingStatus.WRITING)  # not done yet
_GOOD = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)


class LibpqPipeline(PipelineBase):
    def _init(self) -> None:
        self._pgconn: pq.abc.PGconn | None = None
        self._fd = -1
        # Per group in flight: its size, or None for the set-up group (its results go to
        # `_ready`, not to the owner).
        self._groups: collections.deque[int | None] = collections.deque()
        self._results: list[StatementResult] = []  # the oldest group's results so far
        self._result: pq.abc.PGresult | None = None  # a statement's result, until its end
        self._writing = False  # waiting for the socket to take the rest of our output
        self._ready: asyncio.Future[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._groups)

    @property
    def can_send(self) -> bool:
        return self._pgconn is not None and not self._writing

    @property
    def backend_pid(self) -> int:
        return self._pgconn.backend_pid if self._pgconn is not None else 0

    # --- connecting ---------------------------------------------------------------------

    async def connect(
        self, params: dict[str, Any], setup: Sequence[str], prepared: dict[str, str]
    ) -> None:
        self._groups.clear()
        self._results, self._result = [], None
        pgconn = await self._open(params)
        pgconn.nonblocking = 1
        pgconn.enter_pipeline_mode()
        self._pgconn = pgconn
        # Kept: once libpq sees the connection lost it closes the socket, and
        # `pgconn.socket` raises, but the loop must still be told to stop watching it.
        self._fd = pgconn.socket
        ready = self._ready = self.loop.create_future()
        for sql in setup:
            pgconn.send_query_params(sql.encode(), None)
        for name, sql in prepared.items():
            pgconn.send_prepare(name.encode(), numbered(sql).encode())
        pgconn.pipeline_sync()
        self._groups.append(None)
        self.loop.add_reader(self._fd, self._on_readable)
        self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(ready), timeout=self.connect_seconds)
        except BaseException:
            self.close()
            raise

    async def _open(self, params: dict[str, Any]) -> pq.abc.PGconn:
        failure = "no address to try"
        for attempt in await conninfo_attempts_async(params):
            pgconn: pq.abc.PGconn | None = pq.PGconn.connect_start(
                make_conninfo("", **attempt).encode()
            )
            status = pq.PollingStatus.FAILED
            try:
                async with asyncio.timeout(self.connect_seconds):
                    while (
                        pgconn is not None
                        and (status := pq.PollingStatus(pgconn.connect_poll())) in _POLLING
                    ):
                        await self._wait_for_socket(pgconn.socket, status)
                if pgconn is not None and status == pq.PollingStatus.OK:
                    connected, pgconn = pgconn, None
                    return connected
                if pgconn is not None:
                    failure = pgconn.get_error_message().strip()
            except TimeoutError:
                failure = f"no answer within {self.connect_seconds:g} s"
            except Exception as exc:  # the connection went away between polls
                failure = type(exc).__name__
            finally:
                if pgconn is not None:  # failed, timed out, or cancelled (a shutdown)
                    pgconn.finish()
        raise self.connect_error(failure)

    async def _wait_for_socket(self, fd: int, status: pq.PollingStatus) -> None:
        ready: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        if status == pq.PollingStatus.WRITING:
            self.loop.add_writer(fd, wake)
            unwatch = self.loop.remove_writer
        else:
            self.loop.add_reader(fd, wake)
            unwatch = self.loop.remove_reader
        try:
            await ready
        finally:
            unwatch(fd)

    # --- sending ------------------------------------------------------------------------

    def send_group(self, statements: Sequence[tuple[str, Params]]) -> None:
        pgconn = self._pgconn
        if pgconn is None:
            raise self.closed_error()
        for name, params in statements:
            pgconn.send_query_prepared(name.encode(), params)
        pgconn.pipeline_sync()
        self._groups.append(len(statements))
        self._flush()

    def _flush(self) -> None:
        """Push our output to the socket; wait for it to drain if it is full."""
        if self._pgconn is None:
            return
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
        except Exception as exc:
            self._broken(exc)
            return
        if not self._writing:
            # libpq may have read answers while it waited to write.
            self._on_readable()

    # --- receiving ----------------------------------------------------------------------

    def _on_readable(self) -> None:
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
                    self._results.append(_result_of(self._result))  # a statement's end
                    self._result = None
                elif result.status == pq.ExecStatus.PIPELINE_SYNC:
                    self._group_done()
                else:
                    self._result = result
            if pgconn.status != pq.ConnStatus.OK:
                raise ConnectionError("the connection was lost")
        except Exception as exc:
            self._broken(exc)
            return
        self._on_progress()

    def _group_done(self) -> None:
        size, results = self._groups.popleft(), self._results
        self._results = []
        if size is None:  # the set-up group
            ready = self._ready
            if ready is not None and not ready.done():
                failed = [result for result in results if not result.ok]
                if failed:
                    ready.set_exception(ConnectionError(failed[0].error))
                else:
                    ready.set_result(None)
            return
        if len(results) != size:  # an aborted group: no result for the rest
            results += [StatementResult(False, error="aborted")] * (size - len(results))
        self._on_group(results)

    def _broken(self, exc: BaseException) -> None:
        if self._pgconn is None:
            return
        self.close()
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_exception(ConnectionError("the connection failed"))
        self._on_broken(exc)

    def close(self) -> None:
        pgconn, self._pgconn = self._pgconn, None
        self._groups.clear()
        self._results, self._result = [], None
        if pgconn is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self.loop.remove_reader(self._fd)
            if self._writing:
                self.loop.remove_writer(self._fd)
        self._writing = False
        with contextlib.suppress(Exception):
            pgconn.finish()


def _result_of(result: pq.abc.PGresult) -> StatementResult:
    if result.status in _GOOD:
        value = result.get_value(0, 0) if result.ntuples and result.nfields else None
        return StatementResult(True, value)
    state = result.error_field(pq.DiagnosticField.SQLSTATE) or b""
    message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or b""
    return StatementResult(False, error=f"{state.decode()} {message.decode(errors='replace')}")
