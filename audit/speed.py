"""Each LLM's speed as measured from the audit trail, beside the catalog's figures.

Over a window (the last 7 days) of successful calls: the median and 95th percentile of
latency, the median time to first token of streamed calls, and output tokens per second.
Percentiles are `percentile_cont` (linear interpolation) computed by the database: in one
GROUP BY on PostgreSQL; elsewhere by reading the one or two ordered values around each
percentile with LIMIT/OFFSET, so no rows are loaded into Python either way. Both give the
same numbers.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from django.db import connections, transaction
from django.db.models import (
    Aggregate,
    Case,
    Count,
    F,
    FloatField,
    IntegerField,
    Q,
    QuerySet,
    Sum,
    When,
)
from django.utils import timezone

from connections import versioning
from connections.models import LLM

from .models import CallRecord

WINDOW = dt.timedelta(days=7)
LATENCY = "latency_ms"
TTFT = "ttft_ms"


class PercentileCont(Aggregate):
    """PostgreSQL's `percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)`."""

    function = "percentile_cont"
    name = "PercentileCont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression, fraction: float, **extra) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError("fraction must be within [0, 1]")
        # A float literal in the SQL: it is ours, never user input.
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


@dataclass(frozen=True)
class Speed:
    calls: int
    p50_ms: int | None
    p95_ms: int | None
    ttft_ms: int | None
    tokens_per_second: float | None


# Time spent generating: after the first token for streams; the whole call otherwise,
# since an unstreamed answer arrives at once.
_GENERATION_MS = Case(
    When(streamed=True, ttft_ms__isnull=False, then=F(LATENCY) - F(TTFT)),
    default=F(LATENCY),
    output_field=IntegerField(),
)
_GENERATED = Q(completion_tokens__gt=0)


def _measured(*, since: dt.datetime, until: dt.datetime) -> QuerySet[CallRecord]:
    return (
        CallRecord.objects.ok()
        .started_between(since, until)
        .filter(llm__isnull=False, latency_ms__isnull=False)
        .order_by()
    )


def _round(value: float | None) -> int | None:
    return None if value is None else round(value)


def _per_second(tokens: int | None, milliseconds: int | None) -> float | None:
    if not tokens or not milliseconds or milliseconds <= 0:
        return None
    return round(tokens * 1000 / milliseconds, 2)


def _speeds_postgresql(records: QuerySet[CallRecord]) -> dict[int, Speed]:
    rows = (
        records.values("llm_id")
        .annotate(
            calls=Count("pk"),
            p50=PercentileCont(LATENCY, 0.5),
            p95=PercentileCont(LATENCY, 0.95),
            ttft=PercentileCont(TTFT, 0.5, filter=Q(streamed=True)),
            tokens=Sum("completion_tokens", filter=_GENERATED),
            generation_ms=Sum(_GENERATION_MS, filter=_GENERATED),
        )
        .order_by()
    )
    return {
        row["llm_id"]: Speed(
            calls=row["calls"],
            p50_ms=_round(row["p50"]),
            p95_ms=_round(row["p95"]),
            ttft_ms=_round(row["ttft"]),
            tokens_per_second=_per_second(row["tokens"], row["generation_ms"]),
        )
        for row in rows
    }


def percentile(records: QuerySet, field: str, fraction: float) -> float | None:
    """`percentile_cont(fraction)` of `field` over `records`, reading at most two rows."""
    values = records.filter(**{f"{field}__isnull": False})
    count = values.count()
    if not count:
        return None
    position = fraction * (count - 1)
    lower = math.floor(position)
    around = list(values.order_by(field).values_list(field, flat=True)[lower : lower + 2])
    weight = position - lower
    if weight == 0 or len(around) == 1:
        return float(around[0])
    return around[0] + weight * (around[1] - around[0])


def _speeds_portable(records: QuerySet[CallRecord]) -> dict[int, Speed]:
    speeds = {}
    totals = (
        records.values("llm_id")
        .annotate(
            calls=Count("pk"),
            tokens=Sum("completion_tokens", filter=_GENERATED),
            generation_ms=Sum(_GENERATION_MS, filter=_GENERATED),
        )
        .order_by()
    )
    for row in totals:
        own = records.filter(llm_id=row["llm_id"])
        speeds[row["llm_id"]] = Speed(
            calls=row["calls"],
            p50_ms=_round(percentile(own, LATENCY, 0.5)),
            p95_ms=_round(percentile(own, LATENCY, 0.95)),
            ttft_ms=_round(percentile(own.filter(streamed=True), TTFT, 0.5)),
            tokens_per_second=_per_second(row["tokens"], row["generation_ms"]),
        )
    return speeds


def measured_speeds(*, since: dt.datetime, until: dt.datetime) -> dict[int, Speed]:
    """{llm id: Speed} over the successful calls started in [since, until)."""
    records = _measured(since=since, until=until)
    if connections[records.db].vendor == "postgresql":
        return _speeds_postgresql(records)
    return _speeds_portable(records)


MEASURED_FIELDS = (
    "measured_p50_ms",
    "measured_p95_ms",
    "measured_ttft_ms",
    "measured_tokens_per_second",
    "measured_at",
)


@transaction.atomic
def llm_speed_refresh(*, now: dt.datetime | None = None, window: dt.timedelta = WINDOW) -> int:
    """Store each LLM's measured speed over `window` up to `now` on its `measured_*` fields.

    LLMs with no successful call in the window get empty figures (shown as "not measured"):
    an old number would pass for a current one. Returns how many LLMs have figures.
    """
    now = now or timezone.now()
    speeds = measured_speeds(since=now - window, until=now)
    changed = []
    for llm in LLM.objects.only("pk", *MEASURED_FIELDS):
        speed = speeds.get(llm.pk)
        figures = (
            (speed.p50_ms, speed.p95_ms, speed.ttft_ms, speed.tokens_per_second, now)
            if speed
            else (None, None, None, None, None)
        )
        current = tuple(getattr(llm, name) for name in MEASURED_FIELDS)
        if speed is None and current == figures:
            continue  # nothing measured before, nothing now: leave the row alone
        for name, value in zip(MEASURED_FIELDS, figures, strict=True):
            setattr(llm, name, value)
        changed.append(llm)
    if changed:
        LLM.objects.bulk_update(changed, MEASURED_FIELDS, batch_size=500)
        # bulk_update sends no save signal: bump the catalog version here, so /v1/models
        # and the other in-memory catalogs pick the new figures up.
        transaction.on_commit(lambda: versioning.bump(versioning.CATALOG))
    return len(speeds)
