"""The call table by month on PostgreSQL (audit.partitions), and the records' retention.

The suite's PostgreSQL database holds the partitioned table (conftest's django_db_setup),
as production's migration 0009 leaves it. Tests that change the layout (converting back and
forth, creating and dropping partitions) do it inside their own transaction: PostgreSQL's
DDL is transactional, so each leaves the table as it found it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import io
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.db import connection
from django.db.models import Sum

from audit import partitions, services
from audit.models import CallRecord, UsageRollup
from audit.partitions import DEFAULT, partition_name, partitions_ensure
from audit.retention import call_records_expire
from audit.tasks_audit import maintain_call_partitions
from audit.tests.make_records import create, record
from audit.tests.usage_data import FIRST_INSTANT, MONTH, NEXT_MONTH_FIRST, cents, generate_month

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="partitions are PostgreSQL's (SQLite: one table)"
)
UTC = dt.UTC


def at(year: int, month: int, day: int = 15, hour: int = 12) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=UTC)


def home(*records: CallRecord) -> list[str]:
    """The partition each record's row lives in."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, tableoid::regclass::text FROM audit_callrecord WHERE id = ANY(%s)",
            [[r.pk for r in records]],
        )
        found = dict(cursor.fetchall())
    return [found[r.pk] for r in records]


def exists(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        return cursor.fetchone()[0]


def snapshot() -> list[tuple]:
    return list(
        CallRecord.objects.order_by("pk").values_list(
            "pk", "request_id", "started_at", "cost", "request_body", "department_id"
        )
    )


@on_postgresql
@pytest.mark.django_db
def test_the_suite_runs_on_the_partitioned_table():
    assert partitions.is_partitioned()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'audit_callrecord'::regclass AND contype = 'p'"
        )
        assert cursor.fetchone()[0] == "PRIMARY KEY (id, started_at)"
    names = [p.name for p in partitions.partitions()]
    assert names[-1] == DEFAULT


@on_postgresql
@pytest.mark.django_db
def test_the_migration_converts_a_plain_table_and_keeps_its_rows(cast):
    migration = importlib.import_module("audit.migrations.0009_callrecord_partitioned_by_month")
    with connection.schema_editor() as editor:
        migration.unpartition(None, editor)  # back to the plain table of migration 0008
    assert not partitions.is_partitioned()
    create(
        record(user=cast.alice, llm=cast.gpt4o, started_at=at(2024, 11, 30, 23)),
        record(user=cast.bob, llm=cast.gpt4o_mini, started_at=at(2025, 2, 1, 0)),
        record(user=cast.alice, cost=Decimal("0.0000000001"), started_at=at(2025, 2, 28)),
        record(user=cast.charlie, started_at=dt.datetime.now(UTC)),
    )
    before = snapshot()

    with connection.schema_editor() as editor:
        migration.partition(None, editor)

    assert partitions.is_partitioned()
    assert snapshot() == before
    months = [p.month for p in partitions.partitions() if p.month]
    # Every month from the oldest record's to three past this one, with no gap.
    assert months[0] == dt.date(2024, 11, 1)
    assert months == [partitions.add_months(months[0], n) for n in range(len(months))]
    this = partitions.month_of(dt.datetime.now(UTC))
    assert months[-1] == partitions.add_months(this, 3)
    rows = CallRecord.objects.order_by("started_at")
    assert home(*rows) == [
        partition_name(dt.date(2024, 11, 1)),
        partition_name(dt.date(2025, 2, 1)),
        partition_name(dt.date(2025, 2, 1)),
        partition_name(this),
    ]
    # Ids carry on from the plain table's sequence.
    (new,) = create(record(started_at=dt.datetime.now(UTC)))
    assert new.pk > max(pk for pk, *_ in before)
    # Running it again changes nothing.
    assert partitions.partition_table() is False


@on_postgresql
@pytest.mark.django_db
def test_converting_refuses_a_unique_key_without_the_start_time():
    with connection.schema_editor() as editor:
        importlib.import_module(
            "audit.migrations.0009_callrecord_partitioned_by_month"
        ).unpartition(None, editor)
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_callrecord ADD CONSTRAINT one_id UNIQUE (request_id)")
    with pytest.raises(ValueError, match="partition key"):
        partitions.partition_table()


@on_postgresql
@pytest.mark.django_db
def test_inserts_land_in_the_partition_of_their_month(cast):
    now = dt.datetime.now(UTC)
    this = partitions.month_of(now)
    next_month = partitions.add_months(this, 1)
    records = create(
        record(user=cast.alice, started_at=now),
        record(user=cast.bob, started_at=partitions.month_bound(next_month)),  # its first instant
        record(
            user=cast.bob,
            started_at=partitions.month_bound(next_month) - dt.timedelta(microseconds=1),
        ),
    )
    assert home(*records) == [
        partition_name(this),
        partition_name(next_month),
        partition_name(this),
    ]
    # A month's query reads that month's partition only.
    with connection.cursor() as cursor:
        start, end = partitions.month_bound(this), partitions.month_bound(next_month)
        cursor.execute(
            "EXPLAIN SELECT count(*) FROM audit_callrecord "
            "WHERE started_at >= %s AND started_at < %s",
            [start, end],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert partition_name(this) in plan
    assert partition_name(next_month) not in plan and DEFAULT not in plan


@on_postgresql
@pytest.mark.django_db
def test_the_default_partition_catches_an_unplanned_month_and_the_task_splits_it_out(
    cast, settings
):
    settings.MESHGATE_AUDIT_PARTITIONS_AHEAD = 3
    now = dt.datetime.now(UTC)
    far = partitions.add_months(partitions.month_of(now), 9)
    old = dt.date(2023, 4, 1)
    assert far not in {p.month for p in partitions.partitions()}
    records = create(
        record(user=cast.alice, started_at=partitions.month_bound(far) + dt.timedelta(days=3)),
        record(user=cast.bob, started_at=partitions.month_bound(far) + dt.timedelta(days=20)),
        record(user=cast.bob, started_at=at(2023, 4, 2)),
        record(user=cast.bob, started_at=now),
    )
    before = snapshot()
    assert home(*records) == [DEFAULT, DEFAULT, DEFAULT, partition_name(partitions.month_of(now))]

    result = maintain_call_partitions.apply().get()

    assert sorted(result["created"]) == sorted([partition_name(far), partition_name(old)])
    assert home(*records)[:3] == [partition_name(far), partition_name(far), partition_name(old)]
    assert snapshot() == before
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {DEFAULT}")
        assert cursor.fetchone()[0] == 0
    # The split partition has its indexes, and running again creates nothing.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = %s", [partition_name(far)]
        )
        assert cursor.fetchone()[0] == 8  # primary key, request id, and the six indexes
    assert partitions_ensure(ahead=3) == []
    # A new record of that month goes straight to its partition now.
    (later,) = create(record(started_at=partitions.month_bound(far) + dt.timedelta(days=1)))
    assert home(later) == [partition_name(far)]


@on_postgresql
@pytest.mark.django_db
def test_partitions_are_made_ahead_at_migrate_and_on_demand(settings):
    from django.core.management import call_command

    from audit.apps import _partitions_ahead

    this = partitions.month_of(dt.datetime.now(UTC))
    _partitions_ahead(sender=None)
    months = {p.month for p in partitions.partitions()}
    assert {partitions.add_months(this, n) for n in range(4)} <= months
    out = io.StringIO()
    call_command("audit_partitions", "--ahead", "6", stdout=out)
    assert f"created {partition_name(partitions.add_months(this, 6))}" in out.getvalue()
    assert partitions.add_months(this, 6) in {p.month for p in partitions.partitions()}


def aged_records(cast, now: dt.datetime) -> dict[str, list[CallRecord]]:
    """Records in each month from six months before `now`'s to `now`'s."""
    by_month = {}
    this = partitions.month_of(now)
    for back in range(6, -1, -1):
        month = partitions.add_months(this, -back)
        start = partitions.month_bound(month)
        by_month[f"{month:%Y-%m}"] = create(
            record(user=cast.alice, started_at=start),
            record(user=cast.bob, started_at=start + dt.timedelta(days=27, hours=23)),
        )
    return by_month


@pytest.mark.django_db
def test_retention_removes_whole_months_past_the_setting_and_keeps_the_rest(cast, settings):
    """On PostgreSQL whole partitions are dropped; on SQLite (one table), rows are deleted.
    Either way: the current month and MESHGATE_AUDIT_KEEP_MONTHS before it are kept."""
    now = at(2025, 8, 10)
    by_month = aged_records(cast, now)
    partitioned = partitions.is_partitioned()
    if partitioned:
        partitions_ensure(ahead=1, now=now)  # splits the old months out of the default
        assert all(p.startswith("audit_callrecord_p") for p in home(*by_month["2025-02"]))
    # A stray row of a month without a partition (made after the split above).
    create(record(user=cast.alice, started_at=at(2024, 1, 5)))

    settings.MESHGATE_AUDIT_KEEP_MONTHS = 0
    assert call_records_expire(now=now).cutoff is None
    assert CallRecord.objects.count() == 15

    settings.MESHGATE_AUDIT_KEEP_MONTHS = 3
    expired = call_records_expire(now=now)

    assert expired.cutoff == dt.datetime(2025, 5, 1, tzinfo=UTC)
    kept = CallRecord.objects.order_by("started_at")
    assert {f"{r.started_at:%Y-%m}" for r in kept} == {"2025-05", "2025-06", "2025-07", "2025-08"}
    assert kept.count() == 8
    if partitioned:
        gone = [partition_name(dt.date(2025, m, 1)) for m in (2, 3, 4)]
        assert expired.partitions == gone and expired.rows == 1  # the stray row
        assert not any(exists(name) for name in gone)
        assert exists(partition_name(dt.date(2025, 5, 1)))
    else:
        assert expired.partitions == [] and expired.rows == 7
    assert call_records_expire(now=now).rows == 0  # idempotent


@on_postgresql
@pytest.mark.django_db
def test_retention_can_detach_a_month_for_archiving_instead(cast, settings):
    now = at(2025, 8, 10)
    by_month = aged_records(cast, now)
    partitions_ensure(ahead=0, now=now)
    settings.MESHGATE_AUDIT_KEEP_MONTHS = 5
    settings.MESHGATE_AUDIT_EXPIRED_PARTITIONS = "detach"

    expired = call_records_expire(now=now)

    name = partition_name(dt.date(2025, 2, 1))
    assert expired.partitions == [name]
    assert not CallRecord.objects.filter(started_at__lt=at(2025, 3, 1, 0)).exists()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT request_id FROM {name} ORDER BY started_at")
        assert [row[0] for row in cursor.fetchall()] == [r.request_id for r in by_month["2025-02"]]
        cursor.execute("SELECT relispartition FROM pg_class WHERE relname = %s", [name])
        assert cursor.fetchone()[0] is False


@pytest.mark.django_db
def test_a_day_whose_records_expired_keeps_its_rollup(cast, settings):
    now = dt.datetime.now(UTC)
    old_day = (partitions.month_bound(partitions.add_months(partitions.month_of(now), -4))).date()
    create(record(user=cast.alice, llm=cast.gpt4o, started_at=at(old_day.year, old_day.month, 1)))
    services.usage_rollup_day(day=old_day)
    assert UsageRollup.objects.filter(day=old_day).count() == 1
    settings.MESHGATE_AUDIT_KEEP_MONTHS = 2
    call_records_expire()
    assert not CallRecord.objects.exists()
    assert services.usage_rollup_day(day=old_day).groups == 1
    assert UsageRollup.objects.filter(day=old_day).count() == 1


@on_postgresql
@pytest.mark.django_db
def test_rollup_and_chargeback_reconcile_across_partitions(cast):
    CallRecord.objects.bulk_create(generate_month(cast, count=900))
    # September, October and November 2026 get partitions of their own (the edge records
    # spill over the month's ends), and every row leaves the default partition.
    partitions_ensure(ahead=0, now=at(2026, 10, 1))
    assert {partition_name(dt.date(2026, m, 1)) for m in (9, 10, 11)} <= set(
        home(*CallRecord.objects.all())
    )
    assert DEFAULT not in home(*CallRecord.objects.all())
    records = CallRecord.objects.filter(
        started_at__gte=FIRST_INSTANT, started_at__lt=NEXT_MONTH_FIRST
    )
    records_total = records.aggregate(c=Sum("cost"))["c"]

    services.usage_rollup_range(first=MONTH, last=MONTH.replace(day=31))
    result = services.chargeback_build(month="2026-10", refresh_rollups=False)

    rollups = UsageRollup.objects.filter(day__gte=MONTH, day__lte=MONTH.replace(day=31))
    assert rollups.aggregate(r=Sum("requests"))["r"] == records.count()
    reports_total = sum(report.total_cost for report in result.reports)
    assert (
        cents(records_total) == cents(rollups.aggregate(c=Sum("cost"))["c"]) == cents(reports_total)
    )
    for report in result.reports:
        assert report.requests == records.filter(department=report.department).count()


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_the_audit_writer_opens_and_completes_records_in_their_partitions():
    from audit.tests.test_writer import closing, opening
    from audit.writer import AuditWriter

    writer = AuditWriter()
    now = dt.datetime.now(UTC)
    this = partitions.month_of(now)
    old = now - dt.timedelta(days=3 * 365)  # a month with no partition: the default one
    try:

        async def call(started: dt.datetime, index: int) -> int:
            pk = await writer.insert(opening(started_at=started, purpose=f"writer {index}"))
            writer.complete(pk, closing(latency_ms=index, prompt_tokens=index))
            return pk

        async def calls() -> list[int]:
            pks = await asyncio.gather(*(call(now if i % 2 else old, i) for i in range(20)))
            await writer.flush()
            return pks

        # The writer thread, then the loop writer (the gateway's, on its event loop).
        pks = asyncio.run(calls())

        async def on_loop() -> list[int]:
            await writer.attach_loop()
            try:
                assert writer._loop_writer is not None and writer._loop_writer.usable
                return await calls()
            finally:
                await writer.detach_loop()

        pks += asyncio.run(on_loop())
    finally:
        writer.stop()

    records = list(CallRecord.objects.filter(pk__in=pks).order_by("pk"))
    assert len(records) == 40
    assert all(r.outcome == "ok" and r.latency_ms == r.prompt_tokens for r in records)
    assert sorted(r.latency_ms for r in records) == sorted(list(range(20)) * 2)
    assert {
        (r.started_at.year == now.year, place)
        for r, place in zip(records, home(*records), strict=True)
    } == {(True, partition_name(this)), (False, DEFAULT)}


@pytest.mark.skipif(connection.vendor == "postgresql", reason="SQLite's own behaviour")
@pytest.mark.django_db
def test_on_sqlite_the_migration_and_the_partition_task_change_nothing(cast, settings):
    migration = importlib.import_module("audit.migrations.0009_callrecord_partitioned_by_month")
    create(record(user=cast.alice, started_at=at(2025, 2, 3)), record(started_at=at(2030, 1, 1)))
    before = snapshot()
    # (SQLite's schema editor cannot open inside the test's transaction; the step reads
    # only its connection.)
    migration.partition(None, SimpleNamespace(connection=connection))
    assert not partitions.is_partitioned() and partitions.partitions() == []
    result = maintain_call_partitions.apply().get()
    assert result == {"created": [], "expired": [], "rows_deleted": 0}
    assert snapshot() == before
    out = io.StringIO()
    from django.core.management import call_command

    call_command("audit_partitions", stdout=out)
    assert "not partitioned" in out.getvalue()


@pytest.mark.django_db
def test_an_insert_resumed_after_a_lost_answer_takes_the_committed_record():
    """The writer's resumed insert (audit.statements): its ON CONFLICT names the request id
    with its start time, the unique key the partitioned table holds, and returns the row."""
    from audit.ops import Op
    from audit.statements import insert_rows, statements
    from audit.tests.test_writer import opening

    sql = statements(connection.vendor)
    fields = opening(started_at=at(2023, 7, 9))  # a month in the default partition on PG
    with connection.cursor() as cursor:
        cursor.execute(sql.insert_sql(1), insert_rows(sql, [Op("insert", fields)])[0])
        first = cursor.fetchone()
        cursor.execute(sql.insert_resumed_sql, insert_rows(sql, [Op("insert", fields)])[0])
        again = cursor.fetchone()
    assert again == first and first[1] == fields["request_id"]
    assert CallRecord.objects.filter(request_id=fields["request_id"]).count() == 1
