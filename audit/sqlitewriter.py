"""SQLite audit writes from the gateway's own event loop (see `SQLiteLoopWriter`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from django.db import connection

from . import batched
from .encoders import sqlite_encoders
from .ops import Op, fail, settle
from .statements import statements

logger = logging.getLogger(__name__)


class SQLiteLoopWriter:
    """SQLite: the writes run on the loop itself, between its callbacks.

    An insert and its commit (WAL, synchronous=NORMAL) take ~30 µs in process, far
    less than waking the writer thread and trading the interpreter lock with it.
    What is submitted during one turn of the loop is written as one transaction at
    the start of the next. This connection never waits for SQLite's write lock
    (busy_timeout 0): if another writer holds it (the thread, a Celery task, the
    admin), the group goes to the writer thread, which waits in its own time.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fallback: Callable[[Op], None]) -> None:
        self.loop = loop
        self.usable = False
        self.groups_sent = 0
        self._fallback = fallback
        self._db: Any = None
        self._waiting: list[Op] = []
        self._scheduled = False
        self._idle: list[asyncio.Future] = []
        self._sql: tuple[str, str] = ("", "")
        self._encoders: tuple[list, list] | None = None

    def depth(self) -> int:
        """Writes waiting for the loop's next turn."""
        return len(self._waiting)

    async def connect(self) -> None:
        import sqlite3

        name = str(connection.settings_dict["NAME"])
        if name == ":memory:" or "mode=memory" in name:
            raise ConnectionError("an in-memory database is not shared with another connection")
        sql = statements("sqlite")
        self._sql = (sql.insert_sql(1).replace("%s", "?"), sql.update_sql.replace("%s", "?"))
        self._encoders = sqlite_encoders(sql)
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

    def submit(self, op: Op) -> None:
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

    def _write_alone(self, op: Op) -> None:
        import sqlite3

        try:
            self._write_group([op])
        except sqlite3.OperationalError:
            self._fallback(op)
        except Exception as exc:
            logger.error("audit: %s failed: %s", op.kind, type(exc).__name__)
            if op.kind == "insert":
                fail(op)

    def _write_group(self, group: list[Op]) -> None:
        db = self._db
        insert_sql, update_sql = self._sql
        inserts, updates = self._encoders
        opened: list[tuple[Op, int]] = []
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
            items = [(op.fields["name"], op.fields["item"]) for op in group if op.kind == "batched"]
            for name, row in batched.rows_by_write(items, "sqlite"):
                db.execute(batched.get(name).statement("sqlite").replace("%s", "?"), row)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.groups_sent += 1
        for op, pk in opened:
            settle(op, pk)

    def _disconnect(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(Exception):
                db.close()
