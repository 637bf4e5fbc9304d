"""The database side: spend from the audit trail, and row-locked counters.

`audit_spend` is the truth a counter is rebuilt from: the sum of
`CallRecord.cost` over the quota's scope and period. The counters here
(`QuotaCounter`, one row per quota and period, locked with SELECT ... FOR
UPDATE) enforce quotas when Redis is not configured or not reachable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.db.models.functions import TruncMinute
from django.utils import timezone

from . import runtime
from .config import QuotaConfig, all_quotas
from .periods import EPOCH, ROLLING_BUCKET, Window, bucket_start, from_nanos, to_nanos


class QuotaUnavailable(Exception):
    """The shared counter store (Redis) is unreachable and a blocking quota or a rate
    limit applies: the call is refused (503), never counted in a ledger of this
    process's own that the other workers cannot see."""


class QuotaExceeded(Exception):
    """A blocking quota has no room for the call's worst-case cost."""

    def __init__(self, quota_name: str, resets_at: datetime | None) -> None:
        super().__init__(f"Quota {quota_name!r} is exhausted.")
        self.quota_name = quota_name
        self.resets_at = resets_at


def _scope_q(quota: QuotaConfig) -> Q:
    q = Q()
    for field in ("department_id", "user_id", "api_key_id", "connection_id", "llm_id"):
        value = getattr(quota, field)
        if value is not None:
            q &= Q(**{field: value})
    if quota.purpose:
        q &= Q(purpose=quota.purpose)
    return q


def _records(quota: QuotaConfig, window: Window):
    from audit.models import CallRecord

    records = CallRecord.objects.filter(cost__gt=0)
    if window.rolling:
        records = records.filter(started_at__gt=window.start, started_at__lte=window.end)
    else:
        records = records.filter(started_at__gte=window.start, started_at__lt=window.end)
    if quota.catch_all:
        # The catch-all counts what no other quota matches.
        regular, _ = all_quotas()
        for other in regular:
            records = records.exclude(_scope_q(other))
        return records
    return records.filter(_scope_q(quota))


def audit_spend(quota: QuotaConfig, window: Window) -> Decimal:
    total = _records(quota, window).aggregate(total=Sum("cost"))["total"]
    return total or Decimal("0")


def audit_entries(quota: QuotaConfig, window: Window) -> list[tuple[datetime, int, Decimal]]:
    """(started_at, record id, cost) of each charged call in a rolling window."""
    return list(_records(quota, window).values_list("started_at", "pk", "cost"))


# --- the row-locked counters ----------------------------------------------------------------


@dataclass
class Held:
    """One reservation held in a database counter."""

    quota: QuotaConfig
    window: Window
    nanos: int


def _locked_counter(quota: QuotaConfig, window: Window):
    from quotas.models import QuotaCounter

    period_start = EPOCH if window.rolling else window.start
    rows = QuotaCounter.objects.select_for_update()
    row = rows.filter(quota_id=quota.id, period_start=period_start).first()
    if row is None:
        try:
            with transaction.atomic():
                row = QuotaCounter.objects.create(quota_id=quota.id, period_start=period_start)
        except IntegrityError:
            # Another worker created it first (and seeded it): wait for its lock.
            return rows.get(quota_id=quota.id, period_start=period_start)
        _seed(row, quota, window)
    elif (last_ok := runtime.current.redis_last_ok) is not None and (
        row.seeded_at is None or row.seeded_at < last_ok
    ):
        _seed(row, quota, window)
    return row


def _seed(row, quota: QuotaConfig, window: Window) -> None:
    from quotas.models import QuotaCounter

    row.reserved = Decimal("0")
    row.seeded_at = timezone.now()
    if window.rolling:
        buckets = (
            _records(quota, window)
            .annotate(bucket=TruncMinute("started_at"))
            .values("bucket")
            .annotate(total=Sum("cost"))
        )
        QuotaCounter.objects.filter(quota_id=quota.id).exclude(period_start=EPOCH).delete()
        QuotaCounter.objects.bulk_create(
            QuotaCounter(quota_id=quota.id, period_start=b["bucket"], spent=b["total"])
            for b in buckets
        )
    else:
        row.spent = audit_spend(quota, window)
    row.save()


def _rolling_spent(quota: QuotaConfig, window: Window) -> Decimal:
    from quotas.models import QuotaCounter

    # A bucket [b, b + 1 min) counts while any of it is inside the window.
    total = (
        QuotaCounter.objects.filter(
            quota_id=quota.id, period_start__gt=window.start - ROLLING_BUCKET
        )
        .exclude(period_start=EPOCH)
        .aggregate(total=Sum("spent"))["total"]
    )
    return total or Decimal("0")


def _spent(row, quota: QuotaConfig, window: Window) -> Decimal:
    return _rolling_spent(quota, window) if window.rolling else row.spent


@transaction.atomic
def db_admit(plan: list[Held]) -> None:
    """Check every quota, then reserve on all of them, under their row locks."""
    ordered = sorted(plan, key=lambda held: held.quota.id)  # one lock order: no deadlock
    rows = [_locked_counter(held.quota, held.window) for held in ordered]
    for held, row in zip(ordered, rows, strict=True):
        if not held.quota.blocking or held.nanos <= 0:
            continue
        used = to_nanos(_spent(row, held.quota, held.window) + row.reserved)
        if used + held.nanos > held.quota.amount_nanos:
            raise QuotaExceeded(held.quota.name, None if held.window.rolling else held.window.end)
    for held, row in zip(ordered, rows, strict=True):
        if held.nanos > 0:
            row.reserved += from_nanos(held.nanos)
            row.save(update_fields=["reserved"])


@transaction.atomic
def db_settle(plan: list[Held], actual_nanos: int, started_at: datetime) -> list[int]:
    """Replace the reservations by the actual cost; return each quota's spend after."""
    from quotas.models import QuotaCounter

    spent = {}
    for held in sorted(plan, key=lambda held: held.quota.id):
        row = _locked_counter(held.quota, held.window)
        row.reserved = max(Decimal("0"), row.reserved - from_nanos(held.nanos))
        if held.window.rolling:
            row.save(update_fields=["reserved"])
            if actual_nanos > 0:
                bucket, _ = QuotaCounter.objects.get_or_create(
                    quota_id=held.quota.id, period_start=bucket_start(started_at)
                )
                QuotaCounter.objects.filter(pk=bucket.pk).update(
                    spent=F("spent") + from_nanos(actual_nanos)
                )
        else:
            row.spent += from_nanos(actual_nanos)
            row.save(update_fields=["reserved", "spent"])
        spent[held.quota.id] = to_nanos(_spent(row, held.quota, held.window))
    return [spent[held.quota.id] for held in plan]


def db_status(quota: QuotaConfig, window: Window) -> tuple[Decimal, Decimal]:
    """(spent, reserved) as the database counters hold them, without locking."""
    from quotas.models import QuotaCounter

    period_start = EPOCH if window.rolling else window.start
    row = QuotaCounter.objects.filter(quota_id=quota.id, period_start=period_start).first()
    if row is None:
        return audit_spend(quota, window), Decimal("0")
    return _spent(row, quota, window), row.reserved
