"""Roll-ups and chargeback: the writes of the back office.

A call belongs to the UTC day (and month) of its `started_at`. A day's roll-up rows are
recomputed from CallRecord with one SQL GROUP BY and replace the day's previous rows in the same
transaction, so running it twice, or concurrently, leaves the same numbers.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from decimal import Decimal

from django.apps import apps
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, Max, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import CallRecord, ChargebackReport, DeletedName, UsageRollup
from .money import money_text, units_sum
from .reports import BREAKDOWNS, render_csv, render_xlsx
from .retention import records_cutoff
from .trail import DELETED, TrailName, trail_names

logger = logging.getLogger(__name__)

# Advisory lock namespaces (PostgreSQL): one lock per day rolled up, one per month reported.
_LOCK_ROLLUP_DAY = 0x4D475255  # "MGRU"
_LOCK_CHARGEBACK_MONTH = 0x4D474342  # "MGCB"

TOTAL_FIELDS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "cost")


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
    failed: bool = False


def _day_groups(day: dt.date):
    """The day's calls grouped by department, user, LLM, purpose and key, summed in SQL."""
    start, end = day_bounds(day)
    return (
        CallRecord.objects.started_between(start, end)
        .order_by()
        .values("department_id", "user_id", "llm_id", "purpose", "api_key_id", "api_key_prefix")
        .annotate(
            n_requests=Count("pk"),
            n_errors=Count("pk", filter=~Q(outcome=CallRecord.Outcome.OK)),
            n_prompt=Sum("prompt_tokens"),
            n_completion=Sum("completion_tokens"),
            n_cached=Sum("cached_tokens"),
            total_cost=units_sum("cost"),  # whole money units: exact on every database
        )
    )


@transaction.atomic
def usage_rollup_day(*, day: dt.date) -> RollupResult:
    """Recompute the roll-up rows of one UTC day from its call records.

    The day's rows are replaced by the recomputed totals in one transaction (groups that no
    longer exist disappear); the rows are computed and written by a single
    INSERT ... SELECT ... GROUP BY, so no call record travels to Python.
    """
    cutoff = records_cutoff()
    if cutoff is not None and day_bounds(day)[1] <= cutoff:
        # Its records are gone (MESHGATE_AUDIT_KEEP_MONTHS): its roll-up rows are all that
        # is left of the day, and recomputing them from nothing would erase its spend.
        return RollupResult(day=day, groups=UsageRollup.objects.filter(day=day).count())
    _advisory_lock(_LOCK_ROLLUP_DAY, day.toordinal())
    UsageRollup.objects.filter(day=day).delete()
    select_sql, select_params = _day_groups(day).query.sql_with_params()
    table = connection.ops.quote_name(UsageRollup._meta.db_table)
    columns = (
        "day, computed_at, department_id, user_id, llm_id, purpose, api_key_id, api_key_prefix, "
        "requests, errors, prompt_tokens, completion_tokens, cached_tokens, cost, "
        "department_name, cost_center, user_name, llm_name"
    )
    sql = (
        f"INSERT INTO {table} ({columns}) "  # noqa: S608 - table name from the model, values bound
        "SELECT %s, %s, g.department_id, g.user_id, g.llm_id, g.purpose, g.api_key_id, "
        "g.api_key_prefix, g.n_requests, g.n_errors, g.n_prompt, g.n_completion, g.n_cached, "
        "g.total_cost, '', '', '', '' "
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
    _name_rollups(UsageRollup.objects.filter(day=day))
    return RollupResult(day=day, groups=max(groups, 0))


def _name_rollups(rollups) -> None:
    """Snapshot the names the rows refer to: the live name, else the name it had when it was
    deleted (DeletedName), else none (readers then show "#id (deleted)"). One UPDATE."""

    def name(model, column: str, kind: str, ref: str):
        live = model.objects.filter(pk=OuterRef(ref)).values(column)[:1]
        gone = DeletedName.objects.filter(kind=kind, ref_id=OuterRef(ref)).values("name")[:1]
        return Coalesce(Subquery(live), Subquery(gone), Value(""))

    department = apps.get_model("connections", "Department")
    user = apps.get_model(settings.AUTH_USER_MODEL)
    gone_code = DeletedName.objects.filter(kind="department", ref_id=OuterRef("department_id"))
    rollups.update(
        department_name=name(department, "group__name", "department", "department_id"),
        cost_center=Coalesce(
            Subquery(
                department.objects.filter(pk=OuterRef("department_id")).values("cost_center")[:1]
            ),
            Subquery(gone_code.values("code")[:1]),
            Value(""),
        ),
        user_name=name(user, user.USERNAME_FIELD, "user", "user_id"),
        llm_name=name(apps.get_model("connections", "LLM"), "mesh_id", "llm", "llm_id"),
    )


def usage_rollup_range(*, first: dt.date, last: dt.date) -> list[RollupResult]:
    """Recompute every day from `first` to `last` inclusive, each day in its own transaction
    (days are locked in ascending order, so concurrent ranges cannot deadlock)."""
    if last < first:
        raise ValueError("The range ends before it starts.")
    days = (first + dt.timedelta(days=n) for n in range((last - first).days + 1))
    return [_rollup_day_or_log(day) for day in days]


def _rollup_day_or_log(day: dt.date) -> RollupResult:
    """A day that fails is logged and keeps its previous rows; the days after it still run.
    (Inside an outer transaction, the day's own savepoint is rolled back, not the outer one.)"""
    try:
        return usage_rollup_day(day=day)
    except (OperationalError, InterfaceError):
        raise  # the database is gone: later days would fail too, and the task retries these
    except Exception:
        logger.exception("usage roll-up of %s failed; its previous rows are kept", day)
        return RollupResult(day=day, groups=0, failed=True)


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


def _labels(breakdown: str, rollups, keys: set) -> dict:
    """Each breakdown key's label: the live name, or "name (deleted)"."""
    if breakdown == "purpose":
        return {key: key or "(no purpose)" for key in keys}
    if breakdown == "api_key":  # keys are (id, prefix): the prefix is the key's name
        names = trail_names("api_key", {pk for pk, _prefix in keys})
        return {
            (pk, prefix): (prefix or "(no key)") + (DELETED if names[pk].deleted else "")
            for pk, prefix in keys
        }
    column = f"{breakdown}_name"
    snapshots = rollups.filter(**{f"{breakdown}_id__in": keys - {None}}).exclude(**{column: ""})
    fallback = {pk: (name, "") for pk, name in snapshots.values_list(f"{breakdown}_id", column)}
    return {key: value.label for key, value in trail_names(breakdown, keys, fallback).items()}


def _departments(month_rollups, department_ids) -> list[tuple[int, TrailName]]:
    """Every live department, and every deleted one that has roll-ups in the month."""
    from connections.models import Department

    ids = set(Department.objects.values_list("pk", flat=True)) | (set(department_ids) - {None})
    snapshots = month_rollups.filter(department_id__in=ids).exclude(department_name="")
    fallback = {
        pk: (name, code)
        for pk, name, code in snapshots.values_list(
            "department_id", "department_name", "cost_center"
        )
    }
    names = trail_names("department", ids, fallback)
    return sorted(names.items(), key=lambda item: (item[1].name, item[0]))


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
    the report reconciles with the call records as they are now (a day that fails keeps its
    rows and is logged). Each new report becomes the current one; earlier versions are kept
    with their files. A deleted department that has spend in the month gets its report too,
    named "name (deleted)". A `generation_id` (the task's id) makes a repeat of the same request
    return the reports it already built.
    """
    month = parse_month(month)
    days = month_days(month)
    _advisory_lock(_LOCK_CHARGEBACK_MONTH, month.year * 12 + month.month)
    if generation_id:
        done = list(ChargebackReport.objects.filter(month=month, generation_id=generation_id))
        if done:
            return _result(month, days, done)
    if refresh_rollups:
        for day in days:
            _rollup_day_or_log(day)
    rollups = UsageRollup.objects.filter(day__gte=days[0], day__lte=days[-1]).order_by()

    per_department = {
        row["department_id"]: _totals(row) for row in _sums(rollups.values("department_id"))
    }
    breakdowns: dict[int, dict[str, list[dict]]] = {}
    for name, (columns, _title) in BREAKDOWNS.items():
        rows = list(
            _sums(rollups.filter(department__isnull=False).values("department_id", *columns))
        )
        keys = {
            tuple(row[c] for c in columns) if len(columns) > 1 else row[columns[0]] for row in rows
        }
        labels = _labels(name, rollups, keys)
        for row in rows:
            key = tuple(row[c] for c in columns) if len(columns) > 1 else row[columns[0]]
            item = {"item": str(labels[key]), **_totals(row)}
            breakdowns.setdefault(row["department_id"], {}).setdefault(name, []).append(item)
    for department_breakdowns in breakdowns.values():
        for items in department_breakdowns.values():
            items.sort(key=lambda item: (-item["cost"], item["item"]))

    now = timezone.now()
    created = []
    for department_id, department in _departments(rollups, per_department):
        totals = per_department.get(department_id) or _totals({})
        mine = ChargebackReport.objects.filter(month=month, department_id=department_id)
        latest = mine.aggregate(latest=Max("version"))["latest"]
        mine.filter(is_current=True).update(is_current=False)
        report = ChargebackReport(
            month=month,
            department_id=department_id,
            version=(latest or 0) + 1,
            is_current=True,
            department_name=department.label,
            cost_center=department.code,
            requests=totals["requests"],
            errors=totals["errors"],
            prompt_tokens=totals["prompt_tokens"],
            completion_tokens=totals["completion_tokens"],
            cached_tokens=totals["cached_tokens"],
            total_cost=totals["cost"],
            breakdowns=_jsonable(breakdowns.get(department_id, {})),
            generated_at=now,
            generated_by=actor,
            generation_id=generation_id,
        )
        report.csv_file = render_csv(report)
        report.xlsx_file = render_xlsx(report)
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
        name: [{**item, "cost": money_text(item["cost"])} for item in items]
        for name, items in breakdowns.items()
    }
