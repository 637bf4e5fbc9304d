"""The call table by month, on PostgreSQL: declarative range partitions on `started_at`.

A year of calls is hundreds of millions of rows. Partitioned by UTC month (the roll-up's and
chargeback's own periods), a month's queries read one partition and its indexes, and the
records' retention drops a whole month (a file unlinked) instead of deleting rows one by one.

The layout, kept by this module only:

- `audit_callrecord` is the partitioned parent; `audit_callrecord_pYYYY_MM` holds a month
  [first day 00:00 UTC, next first day); `audit_callrecord_default` (the DEFAULT partition)
  catches a row of any month without a partition of its own, so no insert can fail for
  lack of one. `partitions_ensure` (daily, at `migrate`, on demand) creates this month's
  and the next MESHGATE_AUDIT_PARTITIONS_AHEAD months' partitions, and moves any rows the
  default holds into partitions of their own months.
- PostgreSQL wants the partition key in every primary key and unique constraint: the
  database's primary key is (id, started_at) and a request id is unique with its start time.
  Django keeps `id` as the model's primary key (ids come from one sequence, so they are
  unique across partitions all the same).
- SQLite, and PostgreSQL before the conversion, keep one plain table: every function here
  then does nothing, and `audit.retention` deletes expired records by rows.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from .models import CallRecord

TABLE = CallRecord._meta.db_table
DEFAULT = f"{TABLE}_default"
# Each partition leaves room in its pages for the record's completion (see migration 0006:
# an in-place, HOT update); a partitioned parent itself takes no storage parameters.
STORAGE = "WITH (fillfactor = 80)"
# DDL on the parent waits this long for its lock, then gives up until the next run, rather
# than queue the gateway's audit writes behind it.
LOCK_TIMEOUT_MS = 2000
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True)
class Partition:
    name: str
    month: dt.date | None  # None: the default partition


# --- months -------------------------------------------------------------------------------------


def month_of(moment: dt.datetime) -> dt.date:
    """The first day of the UTC month `moment` falls in."""
    return moment.astimezone(dt.UTC).date().replace(day=1)


def add_months(month: dt.date, count: int) -> dt.date:
    index = month.year * 12 + month.month - 1 + count
    return dt.date(index // 12, index % 12 + 1, 1)


def month_bound(month: dt.date) -> dt.datetime:
    """00:00 UTC on the month's first day."""
    return dt.datetime(month.year, month.month, 1, tzinfo=dt.UTC)


def partition_name(month: dt.date) -> str:
    return f"{TABLE}_p{month:%Y_%m}"


def _literal(month: dt.date) -> str:
    # Built from a date, never from input: safe to place in DDL (which takes no parameters).
    return f"'{month_bound(month).isoformat()}'"


def _range(month: dt.date) -> str:
    return f"FROM ({_literal(month)}) TO ({_literal(add_months(month, 1))})"


# --- what there is ------------------------------------------------------------------------------


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


def partitions() -> list[Partition]:
    """The attached partitions, months in order, the default partition last."""
    if not is_partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
            [TABLE],
        )
        rows = cursor.fetchall()
    found = []
    for name, bound in rows:
        match = _BOUND.search(bound)
        month = month_of(dt.datetime.fromisoformat(match.group(1))) if match else None
        found.append(Partition(name, month))
    return sorted(found, key=lambda p: (p.month is None, p.month or dt.date.min))


def _month_partitions() -> dict[dt.date, str]:
    return {p.month: p.name for p in partitions() if p.month is not None}


# --- converting a plain table -------------------------------------------------------------------


def partition_table(*, ahead: int = 3, now: dt.datetime | None = None) -> bool:
    """Turn the plain call table into the partitioned one, rows kept; False if nothing to do.

    Under an exclusive lock, in the caller's transaction (a migration's): the plain table is
    renamed, the partitioned one created in its image (columns, defaults, checks), with a
    partition per month from the oldest record to `ahead` months past this one and the
    default partition; the rows are copied in, the plain table dropped, and its indexes and
    unique constraints rebuilt under their names (the unique ones must name `started_at`).
    The copy rewrites the table: on a large one, run the migration in a maintenance window.
    """
    if connection.vendor != "postgresql" or is_partitioned():
        return False
    old = f"{TABLE}_unpartitioned"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        indexes, uniques, pk_name = _rebuildable(cursor, TABLE)
        for _name, definition in uniques:
            if "started_at" not in definition:
                raise ValueError(f"{definition} does not hold the partition key (started_at)")
        cursor.execute(f"SELECT min(started_at), max(started_at) FROM {TABLE}")  # noqa: S608
        oldest, newest = cursor.fetchone()
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id'))", [TABLE])
        next_id = cursor.fetchone()[0]
        cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {old}")
        cursor.execute(
            f"CREATE TABLE {TABLE} (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE (started_at)"
        )
        this = month_of(now or timezone.now())
        first = min(month_of(oldest), this) if oldest else this
        last = max(month_of(newest), add_months(this, ahead)) if newest else add_months(this, ahead)
        month = first
        while month <= last:
            cursor.execute(
                f"CREATE TABLE {partition_name(month)} PARTITION OF {TABLE} "
                f"FOR VALUES {_range(month)} {STORAGE}"
            )
            month = add_months(month, 1)
        cursor.execute(f"CREATE TABLE {DEFAULT} PARTITION OF {TABLE} DEFAULT {STORAGE}")
        cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM {old}")  # noqa: S608
        cursor.execute(f"DROP TABLE {old}")  # its identity sequence goes with it
        sequence = f"{TABLE}_id_seq"
        cursor.execute(f"CREATE SEQUENCE {sequence} AS bigint START WITH {int(next_id)}")
        cursor.execute(f"ALTER SEQUENCE {sequence} OWNED BY {TABLE}.id")
        cursor.execute(f"ALTER TABLE {TABLE} ALTER id SET DEFAULT nextval('{sequence}')")
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {pk_name} PRIMARY KEY (id, started_at)")
        _rebuild(cursor, indexes, uniques)
        # No ANALYZE under the lock (seconds per partition): autovacuum analyzes the
        # partitions the copy filled.
    return True


def unpartition_table() -> bool:
    """Back to one plain table (the migration's reverse), rows kept; False if nothing to do."""
    if not is_partitioned():
        return False
    old = f"{TABLE}_partitioned"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        indexes, uniques, pk_name = _rebuildable(cursor, TABLE)
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id'))", [TABLE])
        next_id = cursor.fetchone()[0]
        cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {old}")
        cursor.execute(
            f"CREATE TABLE {TABLE} (LIKE {old} INCLUDING CONSTRAINTS INCLUDING STORAGE "
            f"INCLUDING COMMENTS) {STORAGE}"
        )
        cursor.execute(f"INSERT INTO {TABLE} SELECT * FROM {old}")  # noqa: S608
        cursor.execute(f"DROP TABLE {old}")  # its partitions and sequence go with it
        cursor.execute(
            f"ALTER TABLE {TABLE} ALTER id ADD GENERATED BY DEFAULT AS IDENTITY "
            f"(START WITH {int(next_id)})"
        )
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {pk_name} PRIMARY KEY (id)")
        _rebuild(cursor, indexes, uniques)
    return True


def _rebuildable(cursor, table: str) -> tuple[list[str], list[tuple[str, str]], str]:
    """The table's plain indexes (their CREATE statements), unique constraints and the name
    of its primary key, read before the table is renamed away."""
    cursor.execute(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = %s::regclass "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
        [table],
    )
    indexes = [row[0] for row in cursor.fetchall()]
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid), contype FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('u', 'p')",
        [table],
    )
    rows = cursor.fetchall()
    uniques = [(name, definition) for name, definition, kind in rows if kind == "u"]
    pk_name = next((name for name, _, kind in rows if kind == "p"), f"{table}_pkey")
    return indexes, uniques, pk_name


def _rebuild(cursor, indexes: list[str], uniques: list[tuple[str, str]]) -> None:
    for name, definition in uniques:
        cursor.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {name} {definition}")
    for statement in indexes:
        # Definitions read before the rename name the table by its (unchanged) name: on a
        # partitioned parent each becomes an index on every partition, present and future.
        # (A partitioned parent's own read "ON ONLY", which would skip its partitions.)
        cursor.execute(statement.replace(" ON ONLY ", " ON ", 1))


# --- months ahead, and the default partition's rows ---------------------------------------------


def partitions_ensure(*, ahead: int, now: dt.datetime | None = None) -> list[str]:
    """Create this month's partition and the next `ahead` months'; split out of the default
    partition every month it holds rows of. Returns the partitions created. Idempotent.

    A future month's empty partition is attached under a lock that lets the gateway write
    on (SHARE UPDATE EXCLUSIVE on the parent). A month that may be receiving rows (this one,
    or one the default partition holds rows of) is split under a lock that makes the
    gateway's audit writes wait while its rows move out of the default partition: normally
    none (the default stays empty while this runs daily), a moment.
    """
    if not is_partitioned():
        return []
    this = month_of(now or timezone.now())
    existing = _month_partitions()
    created = []
    for month in (add_months(this, n) for n in range(ahead + 1)):
        if month not in existing:
            created.append(_attach_month(month, busy=month <= this))
    while (month := _a_default_month()) is not None:
        if month in existing or partition_name(month) in created:
            raise RuntimeError(f"{DEFAULT} holds rows of {month:%Y-%m}, which has a partition")
        created.append(_attach_month(month, busy=True))
    return created


def _a_default_month() -> dt.date | None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT min(started_at) FROM {DEFAULT}")  # noqa: S608
        oldest = cursor.fetchone()[0]
    return month_of(oldest) if oldest is not None else None


def _attach_month(month: dt.date, *, busy: bool) -> str:
    name = partition_name(month)
    lower, upper = _literal(month), _literal(add_months(month, 1))
    in_range = f"started_at >= {lower} AND started_at < {upper}"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
        if busy:
            # Writers wait at the parent, then route with the new partition: a row routed to
            # the default partition before a concurrent attach would fail its constraint.
            cursor.execute(f"LOCK TABLE {TABLE} IN SHARE ROW EXCLUSIVE MODE")
        cursor.execute(
            f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) {STORAGE}"
        )
        # A CHECK matching the bounds spares ATTACH a scan of the new table.
        cursor.execute(f"ALTER TABLE {name} ADD CONSTRAINT {name}_bounds CHECK ({in_range})")
        if busy:
            cursor.execute(f"INSERT INTO {name} SELECT * FROM {DEFAULT} WHERE {in_range}")  # noqa: S608
            cursor.execute(f"DELETE FROM {DEFAULT} WHERE {in_range}")  # noqa: S608
        cursor.execute(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES {_range(month)}")
        cursor.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_bounds")
    return name


# --- retention by whole months ------------------------------------------------------------------


def partitions_expire(*, before: dt.date, detach: bool) -> list[str]:
    """Drop (or detach, for archiving) every month partition that ends on or before the
    first day of `before`'s month. Returns their names."""
    gone = []
    for month, name in sorted(_month_partitions().items()):
        if add_months(month, 1) > before:
            break
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
            if detach:
                # A standalone table to dump and drop: it no longer draws on the sequence.
                cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
                cursor.execute(f"ALTER TABLE {name} ALTER id DROP DEFAULT")
            else:
                cursor.execute(f"DROP TABLE {name}")
        gone.append(name)
    return gone
