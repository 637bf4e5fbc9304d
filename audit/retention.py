"""Retention, in two steps.

- Bodies: past MESHGATE_AUDIT_RETENTION_DAYS, a record keeps its metadata (who, when, which
  model, tokens, cost: what chargeback needs) and loses its request and response bodies,
  which are where personal data lives.
- Records: with MESHGATE_AUDIT_KEEP_MONTHS set (0, the default, keeps them for ever), the
  records of months older than this month and that many before it go, whole months at a
  time. On a partitioned table (PostgreSQL) a month goes as its partition, dropped or
  detached (MESHGATE_AUDIT_EXPIRED_PARTITIONS); elsewhere, and for stray rows in the default
  partition, by rows. Roll-ups and chargeback reports stay: they are tables of their own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from . import partitions
from .models import CallRecord

BATCH_SIZE = 5000


def retention_cutoff(*, now: dt.datetime | None = None) -> dt.datetime:
    return (now or timezone.now()) - dt.timedelta(days=settings.MESHGATE_AUDIT_RETENTION_DAYS)


def call_bodies_purge(*, now: dt.datetime | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Empty the bodies of records started before the retention cutoff; return how many.

    One short transaction per batch rather than one for everything: the first run on a
    large table must not hold row locks on millions of records while the gateway writes.
    Running it again finds nothing left to do (idempotent), and a run stopped half-way
    has lost nothing: the next one carries on.
    """
    cutoff = retention_cutoff(now=now)
    expired = CallRecord.objects.filter(started_at__lt=cutoff).filter(
        Q(request_body__isnull=False) | Q(response_body__isnull=False)
    )
    purged = 0
    # Each batch starts where the last one ended (keyset), so a first run over a big
    # backlog does not rescan the rows it has already emptied. Rows sharing the boundary
    # time are still found: only their bodies, not their time, say whether they are done.
    resume_at = None
    while True:
        with transaction.atomic():
            pending = expired if resume_at is None else expired.filter(started_at__gte=resume_at)
            batch = list(
                pending.order_by("started_at").values_list("pk", "started_at")[:batch_size]
            )
            if not batch:
                return purged
            # The batch's time span lets PostgreSQL look in its months' partitions only.
            purged += CallRecord.objects.filter(
                pk__in=[pk for pk, _ in batch], started_at__range=(batch[0][1], batch[-1][1])
            ).update(request_body=None, response_body=None)
            resume_at = batch[-1][1]


def records_cutoff(*, now: dt.datetime | None = None) -> dt.datetime | None:
    """00:00 UTC on the first day of the oldest month kept; None: records are kept for ever."""
    keep = settings.MESHGATE_AUDIT_KEEP_MONTHS
    if keep <= 0:
        return None
    this = partitions.month_of(now or timezone.now())
    return partitions.month_bound(partitions.add_months(this, -keep))


@dataclass
class Expired:
    cutoff: dt.datetime | None
    partitions: list[str]  # dropped or detached
    rows: int  # deleted one by one (no partitions, or the default partition's)


def call_records_expire(*, now: dt.datetime | None = None, batch_size: int = BATCH_SIZE) -> Expired:
    """Remove the records started before `records_cutoff`. Idempotent.

    The cutoff is a month's first instant, so a partition is wholly expired or wholly kept:
    no month is ever thinned row by row. Rows go by rows only where there is no partition of
    their month (SQLite, an unconverted table, the default partition), in short batches.
    """
    cutoff = records_cutoff(now=now)
    if cutoff is None:
        return Expired(None, [], 0)
    gone: list[str] = []
    table = None
    if partitions.is_partitioned():
        mode = settings.MESHGATE_AUDIT_EXPIRED_PARTITIONS
        gone = partitions.partitions_expire(before=cutoff.date(), detach=mode == "detach")
        table = partitions.DEFAULT
    return Expired(cutoff, gone, _delete_rows_before(cutoff, table, batch_size))


def _delete_rows_before(cutoff: dt.datetime, table: str | None, batch_size: int) -> int:
    deleted = 0
    if table is None:
        expired = CallRecord.objects.filter(started_at__lt=cutoff)
        while True:
            with transaction.atomic():
                pks = list(expired.order_by("started_at").values_list("pk", flat=True)[:batch_size])
                if not pks:
                    return deleted
                deleted += CallRecord.objects.filter(pk__in=pks).delete()[0]
    # Straight at the default partition: no other partition can hold such rows now.
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} "  # noqa: S608
                "WHERE started_at < %s LIMIT %s)",
                [cutoff, batch_size],
            )
            if cursor.rowcount <= 0:
                return deleted
            deleted += cursor.rowcount
