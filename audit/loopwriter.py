"""PostgreSQL audit writes from the gateway's own event loop: no thread, no hand-off.

At one call at a time, the writer thread's hand-offs (queue, wake-up, then the
interpreter lock passed back and forth while the loop admits the call) cost
several times the insert itself. So the gateway's lifespan attaches a LoopWriter
to its serving loop (`AuditWriter.attach_loop`), and calls on that loop write
through it; anything else (another loop, a test's `asyncio.run`) still goes
through the thread in `audit.writer`.

The connection is a `meshsite.lib.pgpipeline` pipeline (libpq in pipeline mode,
watched by the loop); this module says what goes through it: the record's
statements, prepared once, with text parameters encoded by `audit.encoders`, and
when groups go. A *group* is some statements and a Sync: one implicit transaction,
one commit, one round trip. A group goes out as soon as it is asked for while fewer than
MAX_IN_FLIGHT groups are in flight; otherwise what arrives meanwhile waits and
goes as one group when an earlier one comes back (group commit: at one call at a
time each insert commits alone and at once; under load, groups grow instead of
commits multiplying). An insert's future resolves once its group committed.

If a statement fails, PostgreSQL aborts its whole group: the group's statements
are sent again one group each, and an insert that still fails gets
`AuditUnavailable` (the gateway answers 503 and sends nothing upstream). If the
connection breaks, everything unanswered is handed to the writer thread, which
retries on a fresh connection, and this writer reconnects a moment later.

On SQLite, `audit.sqlitewriter.SQLiteLoopWriter` writes between the loop's
callbacks: an insert and its commit take ~30 µs in process, less than waking the thread.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable

from django.db import connection

from meshsite.lib import pgpipeline
from meshsite.lib.metrics import REGISTRY

from . import batched
from .encoders import pg_encoders, pg_text
from .ops import Op, fail, settle
from .statements import statements

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2  # groups sent and not yet answered
MAX_GROUP = 500  # statements in one group
RECONNECT_SECONDS = 2.0
CONNECT_SECONDS = 10.0  # per address tried
_NOT_LIBPQ = {"cursor_factory", "context", "prepare_threshold", "server_side_binding"}
_INSERT = "meshgate_audit_insert"
_UPDATE = "meshgate_audit_update"

# One round trip of a group (its statements and commit), as the loop saw it.
WRITE_SECONDS = REGISTRY.histogram(
    "meshgate_audit_write_seconds",
    "Audit writes: one group of statements and its commit, sent to answered.",
    ("database",),
    (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
POSTGRESQL = ("postgresql",)


class LoopWriter:
    def __init__(self, loop: asyncio.AbstractEventLoop, fallback: Callable[[Op], None]) -> None:
        self.loop = loop
        self.usable = False  # connected and prepared; the AuditWriter routes here only then
        self.groups_sent = 0  # the tests read it
        self._fallback = fallback  # hands an op to the writer thread
        self._pipeline: pgpipeline.Pipeline | None = None
        self._waiting: collections.deque[Op] = collections.deque()
        self._in_flight: collections.deque[list[Op]] = collections.deque()
        self._sent_at: collections.deque[float] = collections.deque()  # each group's, in order
        self._later = False  # a send is scheduled for the loop's next turn
        self._idle: list[asyncio.Future] = []
        self._closing = False
        self._encoders: tuple[list, list] | None = None
        self._batched: dict[str, str] = {}  # a batched write's name: its statement's name

    @property
    def _pgconn(self) -> pgpipeline.Pipeline | None:
        """The connection (its `backend_pid`), for the tests."""
        return self._pipeline

    # --- lifecycle ----------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, prepare the statements; raise if that fails."""
        sql = statements("postgresql")
        self._encoders = pg_encoders(sql)
        writes = batched.registered()
        self._batched = {name: f"meshgate_batched_{i}" for i, name in enumerate(sorted(writes))}
        prepared = {_INSERT: sql.insert_sql(1), _UPDATE: sql.update_sql}
        for name, statement in self._batched.items():
            prepared[statement] = writes[name].statement("postgresql")
        params = {
            key: value
            for key, value in connection.get_connection_params().items()
            if key not in _NOT_LIBPQ and value is not None
        }
        self._in_flight.clear()
        self._sent_at.clear()
        pipeline = pgpipeline.pipeline(
            self.loop, self._group_done, self._progress, self._broken, CONNECT_SECONDS
        )
        self._pipeline = pipeline
        try:
            await pipeline.connect(params, ["SET TIME ZONE 'UTC'"], prepared)
        except Exception as exc:
            self._pipeline = None
            raise ConnectionError(f"audit: cannot connect for the loop writer: {exc}") from None
        self.usable = True

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

    def depth(self) -> int:
        """Statements waiting to be sent or answered."""
        return len(self._waiting) + sum(len(group) for group in self._in_flight)

    def submit(self, op: Op) -> None:
        """Send an insert at once (its call waits); a completion or a batched write at the
        loop's next turn, after the answer it belongs to has been sent."""
        self._waiting.append(op)
        if op.kind == "insert":
            if self._sendable():
                self._send()
        elif not self._later:
            self._later = True
            self.loop.call_soon(self._send_later)

    def _send_later(self) -> None:
        self._later = False
        if self._sendable():
            self._send()

    def _sendable(self) -> bool:
        pipeline = self._pipeline
        return pipeline is not None and pipeline.can_send and len(self._in_flight) < MAX_IN_FLIGHT

    # --- sending ------------------------------------------------------------------------

    def _send(self) -> None:
        """Send what is waiting as groups, while fewer than MAX_IN_FLIGHT are in flight."""
        pipeline = self._pipeline
        try:
            while pipeline is not None and self._waiting and len(self._in_flight) < MAX_IN_FLIGHT:
                group = [found for op in self._take_group() if (found := self._encoded(op))]
                if not group:
                    continue
                pipeline.send_group([(statement, params) for _op, statement, params in group])
                self._in_flight.append([op for op, _statement, _params in group])
                self._sent_at.append(time.monotonic())
                self.groups_sent += 1
        except Exception as exc:
            self._broken(exc)

    def _take_group(self) -> list[Op]:
        """The next group: what waits, up to MAX_GROUP statements; an op being retried
        alone after its group failed goes in a group of its own."""
        first = self._waiting.popleft()
        if first.alone:
            return [first]
        taken = [first]
        while self._waiting and len(taken) < MAX_GROUP and not self._waiting[0].alone:
            taken.append(self._waiting.popleft())
        group = [op for op in taken if op.kind != "batched"]
        # Each batched write's items as its rows (it may merge them: one per key).
        items = [(op.fields["name"], op.fields["item"]) for op in taken if op.kind == "batched"]
        group.extend(
            Op("row", {"name": name, "row": row})
            for name, row in batched.rows_by_write(items, "postgresql")
        )
        return group

    def _encoded(self, op: Op) -> tuple[Op, str, list[bytes | None]] | None:
        """The op, its statement and its parameters; None if a value cannot be written (the
        op fails alone, the connection and the rest of the group are not concerned)."""
        assert self._encoders is not None
        inserts, updates = self._encoders
        values = op.fields
        try:
            if op.kind == "insert":
                statement = _INSERT
                params = [
                    encode(values[name]) if name in values else default
                    for name, default, encode in inserts
                ]
            elif op.kind == "update":
                statement = _UPDATE
                params = [encode(values.get(name)) for name, encode in updates]
                params.append(b"%d" % op.pk)
            else:
                statement = self._batched[values["name"]]
                params = [pg_text(value) for value in values["row"]]
        except (TypeError, ValueError, KeyError) as exc:  # UnicodeEncodeError is a ValueError
            logger.error("audit: %s cannot be written: %s", op.kind, type(exc).__name__)
            if op.kind == "insert":
                fail(op)
            return None
        return op, statement, params

    # --- receiving ----------------------------------------------------------------------

    def _progress(self) -> None:
        """Answers arrived: send what waits; tell those waiting for quiet."""
        if self._waiting and self._sendable():
            self._send()
        if not self._waiting and not self._in_flight:
            for waiter in self._idle:
                if not waiter.done():
                    waiter.set_result(None)
            self._idle.clear()

    def _group_done(self, results: list[pgpipeline.StatementResult]) -> None:
        group = self._in_flight.popleft()
        if self._sent_at:
            WRITE_SECONDS.observe(POSTGRESQL, time.monotonic() - self._sent_at.popleft())
        if len(results) == len(group) and all(result.ok for result in results):
            for op, result in zip(group, results, strict=True):
                if op.kind == "insert" and result.value is not None:
                    settle(op, int(result.value))
            return
        if len(group) > 1:
            # The group was one transaction, and it rolled back: each op goes again alone.
            logger.warning("audit: a group of %d failed, retrying one by one", len(group))
            for op in reversed(group):
                op.alone = True
                self._waiting.appendleft(op)
            return
        op = group[0]
        error = next((result.error for result in results if not result.ok), "no result")
        logger.error("audit: %s failed: %s", op.kind, error)
        if op.kind == "insert":
            fail(op)

    def _broken(self, exc: BaseException) -> None:
        """The connection failed: hand everything unanswered to the thread, reconnect later."""
        if self._pipeline is None:
            return
        logger.warning("audit: the loop writer's connection failed (%s)", type(exc).__name__)
        self.usable = False
        self._disconnect()
        ops = [op for group in self._in_flight for op in group]
        for op in ops:
            op.resumed = True  # sent, unanswered: PostgreSQL may have committed it
        ops.extend(self._waiting)
        self._in_flight.clear()
        self._sent_at.clear()
        self._waiting.clear()
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
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.close()


def _ignore(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
