from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db.models import Sum

from audit import services, tasks
from audit.models import CallRecord, UsageRollup
from audit.tests.usage_data import (
    FIRST_INSTANT,
    LAST_INSTANT,
    MONTH,
    NEXT_MONTH_FIRST,
    generate_month,
)

pytestmark = pytest.mark.django_db

FIELDS = (
    "day",
    "department_id",
    "user_id",
    "llm_id",
    "purpose",
    "api_key_prefix",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost",
)


def snapshot(**filters) -> list[tuple]:
    rows = UsageRollup.objects.filter(**filters).values_list(*FIELDS)
    return sorted(rows, key=repr)


def expected_groups(day: dt.date) -> dict[tuple, dict]:
    """The day's groups, computed in Python from the records: the reference the SQL must match."""
    start, end = services.day_bounds(day)
    groups: dict[tuple, dict] = {}
    for record in CallRecord.objects.filter(started_at__gte=start, started_at__lt=end):
        key = (
            record.department_id,
            record.user_id,
            record.llm_id,
            record.purpose,
            record.api_key_prefix,
        )
        group = groups.setdefault(
            key, {"requests": 0, "errors": 0, "prompt": 0, "cost": Decimal("0")}
        )
        group["requests"] += 1
        group["errors"] += record.outcome != "ok"
        group["prompt"] += record.prompt_tokens
        group["cost"] += record.cost
    return groups


def test_a_day_rollup_matches_the_records_group_by_group(cast):
    CallRecord.objects.bulk_create(generate_month(cast, count=400))
    day = dt.date(2026, 10, 31)

    result = services.usage_rollup_day(day=day)

    expected = expected_groups(day)
    assert result.groups == len(expected) > 0
    for row in UsageRollup.objects.filter(day=day):
        key = (row.department_id, row.user_id, row.llm_id, row.purpose, row.api_key_prefix)
        assert row.requests == expected[key]["requests"]
        assert row.errors == expected[key]["errors"]
        assert row.prompt_tokens == expected[key]["prompt"]
        assert row.cost.quantize(Decimal("0.000001")) == expected[key]["cost"].quantize(
            Decimal("0.000001")
        )


def test_a_call_belongs_to_the_utc_day_it_started_to_the_millisecond(cast):
    CallRecord.objects.bulk_create(generate_month(cast, count=0))
    services.usage_rollup_range(first=dt.date(2026, 9, 30), last=dt.date(2026, 11, 1))

    def requests(day: dt.date) -> int:
        return UsageRollup.objects.filter(day=day).aggregate(n=Sum("requests"))["n"] or 0

    # 00:00:00 on the 1st, and 23:59:59.999 on the 31st (each with a refused call too).
    assert requests(FIRST_INSTANT.date()) == 2
    assert requests(LAST_INSTANT.date()) == 2
    assert requests(NEXT_MONTH_FIRST.date()) == 2
    assert requests(dt.date(2026, 9, 30)) == 1
    assert requests(dt.date(2026, 10, 15)) == 0


def test_running_a_rollup_twice_gives_the_same_rows(cast):
    CallRecord.objects.bulk_create(generate_month(cast, count=300))
    services.usage_rollup_range(first=MONTH, last=dt.date(2026, 10, 31))
    first = snapshot()

    services.usage_rollup_range(first=MONTH, last=dt.date(2026, 10, 31))

    assert snapshot() == first
    assert len(first) > 100


def test_recomputing_sets_the_new_totals_and_drops_groups_that_disappeared(cast):
    day = dt.date(2026, 10, 31)
    CallRecord.objects.bulk_create(generate_month(cast, count=0))
    services.usage_rollup_day(day=day)
    assert UsageRollup.objects.filter(day=day, department=cast.finance).exists()

    # The Finance call moves to Marketing (say, a corrected key) and a late record lands.
    CallRecord.objects.filter(started_at=LAST_INSTANT, department=cast.finance).update(
        department=cast.marketing, cost=Decimal("1.25")
    )
    services.usage_rollup_day(day=day)

    assert not UsageRollup.objects.filter(day=day, department=cast.finance).exists()
    moved = UsageRollup.objects.get(day=day, department=cast.marketing)
    assert (moved.requests, moved.cost) == (1, Decimal("1.25"))


def test_rollup_tasks_run_eagerly_without_redis_and_are_idempotent(cast, settings):
    assert settings.CELERY_TASK_ALWAYS_EAGER or settings.REDIS_URL
    CallRecord.objects.bulk_create(generate_month(cast, count=200))

    tasks.rollup_usage_range.apply(args=["2026-10-01", "2026-10-31"]).get()
    first = snapshot()
    tasks.rollup_usage.apply(args=["2026-10-31"]).get()
    tasks.rollup_usage.apply(args=["2026-10-31"]).get()

    assert snapshot() == first
    total = UsageRollup.objects.aggregate(cost=Sum("cost"))["cost"]
    assert (
        total
        == CallRecord.objects.filter(
            started_at__gte=FIRST_INSTANT, started_at__lt=NEXT_MONTH_FIRST
        ).aggregate(cost=Sum("cost"))["cost"]
    )


def test_the_hourly_task_recomputes_today_and_yesterday(cast):
    from django.utils import timezone

    now = timezone.now()
    yesterday = now - dt.timedelta(days=1)
    three_days_ago = now - dt.timedelta(days=3)
    for n, started in enumerate((now, yesterday, three_days_ago)):
        CallRecord.objects.create(
            request_id=f"recent-{n}",
            started_at=started,
            endpoint="chat.completions",
            department=cast.marketing,
            user=cast.alice,
            outcome="ok",
            cost=Decimal("0.5"),
        )

    results = tasks.rollup_recent_usage.apply().get()

    assert [r["day"] for r in results] == [yesterday.date().isoformat(), now.date().isoformat()]
    assert set(UsageRollup.objects.values_list("day", flat=True)) == {
        now.date(),
        yesterday.date(),
    }


def test_a_range_says_how_each_day_went_and_refuses_to_run_backwards(cast):
    # What the management command and the tasks report: a day with calls, a day without
    # (0 groups, not 1), none failed; a range that ends before it starts is an error.
    CallRecord.objects.bulk_create(generate_month(cast, count=0))
    results = services.usage_rollup_range(first=dt.date(2026, 10, 15), last=LAST_INSTANT.date())
    assert [(r.day.day, r.failed) for r in results] == [(d, False) for d in range(15, 32)]
    by_day = {r.day: r.groups for r in results}
    assert by_day[dt.date(2026, 10, 15)] == 0
    assert by_day[LAST_INSTANT.date()] == len(expected_groups(LAST_INSTANT.date())) > 0
    (one,) = services.usage_rollup_range(first=MONTH, last=MONTH)
    assert (one.day, one.failed, one.groups) == (MONTH, False, len(expected_groups(MONTH)))
    with pytest.raises(ValueError, match="ends before it starts"):
        services.usage_rollup_range(first=dt.date(2026, 10, 2), last=MONTH)


@pytest.mark.parametrize(
    ("month", "days", "following"),
    [
        (dt.date(2026, 2, 1), 28, dt.date(2026, 3, 1)),
        (dt.date(2028, 2, 1), 29, dt.date(2028, 3, 1)),
        (dt.date(2026, 4, 1), 30, dt.date(2026, 5, 1)),
        (dt.date(2026, 12, 1), 31, dt.date(2027, 1, 1)),
    ],
)
def test_a_month_has_its_days_whatever_its_length(month, days, following):
    assert services.next_month(month) == following
    assert services.month_days(month) == [month + dt.timedelta(days=n) for n in range(days)]


@pytest.mark.parametrize("given", ["2026-10", "2026-10-15", dt.date(2026, 10, 15)])
def test_a_month_is_named_by_year_and_month_or_by_any_of_its_dates(given):
    assert services.parse_month(given) == dt.date(2026, 10, 1)
