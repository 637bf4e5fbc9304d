"""Roll-ups and chargeback: the writes of the back office.

A call belongs to the UTC day (and month) of its `started_at`. A day's roll-up rows are
recomputed from CallRecord with one SQL GROUP BY and replace the day's previous rows in the same
transaction, so running it twice, or concurrently, leaves the same numbers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Count, Max, Q, Sum
from django.utils import timezone

from .models import CallRecord, ChargebackReport, UsageRollup

# Advisory lock namespaces (PostgreSQL): one lock per day rolled up, one per month reported.
_LOCK_ROLLUP_DAY = 0x4D475255  # "MGRU"
_LOCK_CHARGEBACK_MONTH = 0x4D474342  # "MGCB"

TOTAL_FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "cost")
BREAKDOWNS = {
    # name -> (roll-up column grouped by, title)
    "llm": ("llm_id", "By LLM"),
    "user": ("user_id", "By user"),
    "purpose": ("purpose", "By purpose"),
    "api_key": ("api_key_prefix", "By API key"),
}


# --- periods -----------------------------------------------------------------------------------


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a UTC day."""
    start = dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def next_month(month: dt.date) -> dt.date:
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def month_days(month: dt.date) -> list[dt.date]:
    first = month_start(month)
    return [first + dt.timedelta(days=n) for n in range((next_month(first) - first).days)]


def parse_month(value: str | dt.date) -> dt.date:
    """'2026-10' (or any date in the month) -> 2026-10-01."""
    if isinstance(value, dt.date):
        return month_start(value)
    return dt.datetime.strptime(value[:7], "%Y-%m").date()


def _advisory_lock(namespace: int, key: int) -> None:
    """Serialize writers of one day or month on PostgreSQL, until the transaction ends.

    SQLite needs no lock: Meshgate opens its transactions with BEGIN IMMEDIATE, which already
    lets one writer at a time in.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [namespace, key])


# --- roll-ups ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RollupResult:
    day: dt.date
    groups: int


def _day_groups(day: dt.date):
    """The day's calls grouped by department, user, LLM, purpose and key, summed in SQL."""
    start, end = day_bounds(day)
    return (
        CallRecord.objects.started_between(start, end)
        .order_by()
        .values("department_id", "user_id", "llm_id", "purpose", "api_key_prefix")
        .annotate(
            n_requests=Count("pk"),
            n_errors=Count("pk", filter=~Q(outcome=CallRecord.Outcome.OK)),
            n_prompt=Sum("prompt_tokens"),
            n_completion=Sum("completion_tokens"),
            n_cached=Sum("cached_tokens"),
            total_cost=Sum("cost"),
        )
    )


@transaction.atomic
def usage_rollup_day(*, day: dt.date) -> RollupResult:
    """Recompute the roll-up rows of one UTC day from its call records.

    The day's rows are replaced by the recomputed totals in one transaction (groups that no
    longer exist disappear); the rows are computed and written by a single
    INSERT ... SELECT ... GROUP BY, so no call record travels to Python.
    """
    _advisory_lock(_LOCK_ROLLUP_DAY, day.toordinal())
    UsageRollup.objects.filter(day=day).delete()
    select_sql, select_params = _day_groups(day).query.sql_with_params()
    table = connection.ops.quote_name(UsageRollup._meta.db_table)
    columns = (
        "day, computed_at, department_id, user_id, llm_id, purpose, api_key_prefix, requests, "
        "errors, prompt_tokens, completion_tokens, cached_tokens, cost"
    )
    sql = (
        f"INSERT INTO {table} ({columns}) "  # noqa: S608 - table name from the model, values bound
        "SELECT %s, %s, g.department_id, g.user_id, g.llm_id, g.purpose, g.api_key_prefix, "
        "g.n_requests, g.n_errors, g.n_prompt, g.n_completion, g.n_cached, g.total_cost "
        f"FROM ({select_sql}) g"
    )
    params = [
        connection.ops.adapt_datefield_value(day),
        connection.ops.adapt_datetimefield_value(timezone.now()),
        *select_params,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        groups = cursor.rowcount
    return RollupResult(day=day, groups=max(groups, 0))


def usage_rollup_range(*, first: dt.date, last: dt.date) -> list[RollupResult]:
    """Recompute every day from `first` to `last` inclusive, each day in its own transaction
    (days are locked in ascending order, so concurrent ranges cannot deadlock)."""
    if last < first:
        raise ValueError("The range ends before it starts.")
    days = (first + dt.timedelta(days=n) for n in range((last - first).days + 1))
    return [usage_rollup_day(day=day) for day in days]


# --- chargeback --------------------------------------------------------------------------------


@dataclass
class ChargebackResult:
    month: dt.date
    reports: list[ChargebackReport]
    # Cost of calls with no department (refused unauthenticated calls): it should be zero.
    unassigned_cost: Decimal
    unassigned_requests: int


def _totals(row: dict) -> dict:
    return {
        "requests": row.get("n_requests") or 0,
        "errors": row.get("n_errors") or 0,
        "prompt_tokens": row.get("n_prompt") or 0,
        "completion_tokens": row.get("n_completion") or 0,
        "cached_tokens": row.get("n_cached") or 0,
        "cost": row.get("total_cost") or Decimal("0"),
    }


def _sums(queryset):
    return queryset.annotate(
        n_requests=Sum("requests"),
        n_errors=Sum("errors"),
        n_prompt=Sum("prompt_tokens"),
        n_completion=Sum("completion_tokens"),
        n_cached=Sum("cached_tokens"),
        total_cost=Sum("cost"),
    )


def _labels(breakdown: str, keys: set) -> dict:
    from django.contrib.auth import get_user_model

    from connections.models import LLM

    if breakdown == "llm":
        names = dict(LLM.objects.filter(pk__in=keys - {None}).values_list("pk", "mesh_id"))
        return {
            key: names.get(key, "(no model)" if key is None else f"(deleted LLM {key})")
            for key in keys
        }
    if breakdown == "user":
        users = get_user_model().objects.filter(pk__in=keys - {None})
        names = dict(users.values_list("pk", "username"))
        return {
            key: names.get(key, "(no user)" if key is None else f"(deleted user {key})")
            for key in keys
        }
    empty = "(no purpose)" if breakdown == "purpose" else "(no key)"
    return {key: key or empty for key in keys}


@transaction.atomic
def chargeback_build(
    *,
    month: dt.date | str,
    actor=None,
    refresh_rollups: bool = True,
    generation_id: str = "",
) -> ChargebackResult:
    """Build a new version of every department's report for `month` from its roll-ups.

    With `refresh_rollups` the month's days are recomputed first, in the same transaction, so
    the report reconciles with the call records as they are now. Each new report becomes the
    current one; earlier versions are kept with their files. A `generation_id` (the task's id)
    makes a repeat of the same request return the reports it already built.
    """
    from connections.models import Department

    from . import reports

    month = parse_month(month)
    days = month_days(month)
    _advisory_lock(_LOCK_CHARGEBACK_MONTH, month.year * 12 + month.month)
    if generation_id:
        done = list(ChargebackReport.objects.filter(month=month, generation_id=generation_id))
        if done:
            return _result(month, days, done)
    if refresh_rollups:
        for day in days:
            usage_rollup_day(day=day)
    rollups = UsageRollup.objects.filter(day__gte=days[0], day__lte=days[-1]).order_by()

    per_department = {
        row["department_id"]: _totals(row) for row in _sums(rollups.values("department_id"))
    }
    breakdowns: dict[int, dict[str, list[dict]]] = {}
    for name, (column, _title) in BREAKDOWNS.items():
        rows = list(_sums(rollups.filter(department__isnull=False).values("department_id", column)))
        labels = _labels(name, {row[column] for row in rows})
        for row in rows:
            item = {"item": str(labels[row[column]]), **_totals(row)}
            breakdowns.setdefault(row["department_id"], {}).setdefault(name, []).append(item)
    for department_breakdowns in breakdowns.values():
        for items in department_breakdowns.values():
            items.sort(key=lambda item: (-item["cost"], item["item"]))

    now = timezone.now()
    created = []
    for department in Department.objects.select_related("group"):
        totals = per_department.get(department.pk) or _totals({})
        latest = ChargebackReport.objects.filter(month=month, department=department).aggregate(
            latest=Max("version")
        )["latest"]
        ChargebackReport.objects.filter(month=month, department=department, is_current=True).update(
            is_current=False
        )
        report = ChargebackReport(
            month=month,
            department=department,
            version=(latest or 0) + 1,
            is_current=True,
            department_name=department.name,
            cost_center=department.cost_center,
            requests=totals["requests"],
            errors=totals["errors"],
            prompt_tokens=totals["prompt_tokens"],
            completion_tokens=totals["completion_tokens"],
            cached_tokens=totals["cached_tokens"],
            total_cost=totals["cost"],
            breakdowns=_jsonable(breakdowns.get(department.pk, {})),
            generated_at=now,
            generated_by=actor,
            generation_id=generation_id,
        )
        report.csv_file = reports.render_csv(report)
        report.xlsx_file = reports.render_xlsx(report)
        report.save()
        created.append(report)

    unassigned = per_department.get(None) or _totals({})
    return ChargebackResult(
        month=month,
        reports=created,
        unassigned_cost=unassigned["cost"],
        unassigned_requests=unassigned["requests"],
    )


def _result(month: dt.date, days: list[dt.date], reports: list[ChargebackReport]):
    rollups = UsageRollup.objects.filter(day__gte=days[0], day__lte=days[-1], department=None)
    rows = list(_sums(rollups.order_by().values("department_id")))
    unassigned = _totals(rows[0] if rows else {})
    return ChargebackResult(
        month=month,
        reports=reports,
        unassigned_cost=unassigned["cost"],
        unassigned_requests=unassigned["requests"],
    )


def _jsonable(breakdowns: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Costs as exact decimal strings: JSON floats would lose the cents' reconciliation."""
    return {
        name: [{**item, "cost": str(item["cost"])} for item in items]
        for name, items in breakdowns.items()
    }
