"""Usage as people read it: roll-up rows named, error rates, money, the admin dashboard's figures.

Who may see which department's roll-ups and reports, and the grouped sums, are queryset
methods (`querysets.py`), so the models need nothing from here."""

from __future__ import annotations

import datetime as dt

from django.db.models import Count, Q, Sum

from .money import money_text
from .querysets import NAMED
from .trail import trail_names


def label_usage(rows, group_by) -> list[dict]:
    """Name the departments, users and LLMs of `summed_by` rows: "department_name" and
    "cost_center", "user_name", "llm_name": the live name, or "name (deleted)"."""
    rows = [dict(row) for row in rows]
    for name in group_by:
        if name not in NAMED:
            continue
        kind, columns = NAMED[name]
        first = next(iter(columns))
        id_key = f"{kind}_id"
        fallback = {
            row[id_key]: (row.get(f"snapshot_{first}") or "", row.get("snapshot_cost_center") or "")
            for row in rows
        }
        names = trail_names(kind, {row[id_key] for row in rows}, fallback)
        for row in rows:
            found = names[row[id_key]]
            row[first] = found.label
            if kind == "department":
                row["cost_center"] = found.code
    return rows


def error_rate(requests: int | None, errors: int | None) -> float:
    return round((errors or 0) / requests, 4) if requests else 0.0


def money(value) -> str:
    """Costs leave the database as exact decimal strings, never floats."""
    return money_text(value)


def calls_per_day(queryset) -> list[dict]:
    """For the dashboard: requests, errors and tokens per day (already summed in roll-ups)."""
    rows = (
        queryset.order_by()
        .values("day")
        .annotate(
            requests=Sum("requests"),
            errors=Sum("errors"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cached_tokens=Sum("cached_tokens"),
            groups=Count("pk"),
        )
    )
    return list(rows.order_by("day"))


def unassigned(queryset) -> dict:
    """Usage with no department: refused calls. Its cost should be zero."""
    return queryset.filter(Q(department__isnull=True)).aggregate(
        requests=Sum("requests"), cost=Sum("cost")
    )


def dashboard_data(rollups, *, today: dt.date, days: int = 30, months: int = 12) -> dict:
    """The admin dashboard's series, each from one GROUP BY over the roll-ups: cost per
    department per month, top LLMs by cost, calls and error rate per day, tokens per day."""
    first_day = today - dt.timedelta(days=days - 1)
    first_month = today.replace(day=1)
    for _ in range(months - 1):
        first_month = (first_month - dt.timedelta(days=1)).replace(day=1)

    month_labels = []
    month = first_month
    while month <= today:
        month_labels.append(f"{month:%Y-%m}")
        month = (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    per_department: dict[str, dict[str, str]] = {}
    by_month = rollups.between(first_month, today).summed_by("month", "department")
    for row in label_usage(by_month, ["department"]):
        name = row["department_name"]
        per_department.setdefault(name, {})[f"{row['month']:%Y-%m}"] = money(row["cost"])
    department_series = [
        {"label": name, "data": [float(values.get(label, 0)) for label in month_labels]}
        for name, values in sorted(per_department.items())
    ]

    recent = rollups.between(first_day, today)
    top_llms = sorted(
        label_usage(recent.summed_by("llm"), ["llm"]),
        key=lambda row: (-(row["cost"] or 0), row["llm_name"]),
    )[:10]

    by_day = {row["day"]: row for row in calls_per_day(recent)}
    day_labels = [first_day + dt.timedelta(days=n) for n in range(days)]

    def series(field: str) -> list[int]:
        return [(by_day.get(day) or {}).get(field) or 0 for day in day_labels]

    requests, errors = series("requests"), series("errors")
    totals = recent.summed_by()[0]
    unassigned_cost = unassigned(recent)["cost"] or 0
    return {
        "months": month_labels,
        "cost_per_department": department_series,
        "top_llms": {
            "labels": [row["llm_name"] for row in top_llms],
            "cost": [float(row["cost"] or 0) for row in top_llms],
        },
        "days": [day.isoformat() for day in day_labels],
        "calls": requests,
        "error_rate": [
            round(100 * error_rate(r, e), 2) for r, e in zip(requests, errors, strict=True)
        ],
        "prompt_tokens": series("prompt_tokens"),
        "completion_tokens": series("completion_tokens"),
        "cached_tokens": series("cached_tokens"),
        "period": {"first": first_day.isoformat(), "last": today.isoformat()},
        "totals": {
            "requests": totals["requests"] or 0,
            "errors": totals["errors"] or 0,
            "cost": money(totals["cost"]),
        },
        "unassigned_cost": money(unassigned_cost),
        "unassigned_has_cost": bool(unassigned_cost),
    }
