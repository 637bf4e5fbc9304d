"""The admin's date hierarchy on call records: periods found by index probes, not DISTINCT."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.admin_filters import ProbedDatesQuerySet
from audit.models import CallRecord
from audit.tests.make_records import create, record

UTC = dt.UTC


@pytest.fixture
def spread(cast):
    moments = [
        dt.datetime(2024, 12, 31, 23, 30, tzinfo=UTC),  # 2025 already, in Paris
        dt.datetime(2025, 1, 1, 0, 30, tzinfo=UTC),
        dt.datetime(2025, 3, 15, 12, 0, tzinfo=UTC),
        dt.datetime(2025, 3, 16, 8, 0, tzinfo=UTC),
        dt.datetime(2025, 3, 31, 22, 30, tzinfo=UTC),  # April in Paris (summer time)
        dt.datetime(2026, 7, 4, 9, 0, tzinfo=UTC),
    ]
    create(*(record(user=cast.alice, started_at=moment) for moment in moments))
    create(record(user=cast.bob, started_at=dt.datetime(2023, 5, 5, tzinfo=UTC)))


def probed(queryset) -> ProbedDatesQuerySet:
    queryset = queryset.all()
    queryset.__class__ = ProbedDatesQuerySet
    return queryset


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York"])
@pytest.mark.parametrize(
    ("kind", "narrow"),
    [
        ("year", {}),
        ("month", {"started_at__year": 2025}),
        ("month", {"user__username": "alice"}),
    ],
)
@pytest.mark.parametrize("order", ["ASC", "DESC"])
def test_probed_periods_equal_djangos_distinct_periods(spread, zone, kind, narrow, order):
    with timezone.override(zoneinfo.ZoneInfo(zone)):
        queryset = CallRecord.objects.filter(**narrow)
        expected = list(queryset.datetimes("started_at", kind, order))
        assert probed(queryset).datetimes("started_at", kind, order) == expected
        assert expected  # the case is not vacuous


def test_no_records_means_no_periods(cast):
    assert probed(CallRecord.objects.all()).datetimes("started_at", "year") == []


def test_the_changelist_drills_down_years_months_and_days(client, cast, spread):
    client.force_login(cast.admin)
    url = reverse("admin:audit_callrecord_changelist")
    years = client.get(url).content.decode()
    for year in ("2023", "2025", "2026"):
        assert f"started_at__year={year}" in years
    months = client.get(url, {"started_at__year": 2025}).content.decode()
    assert "started_at__month=3" in months and "started_at__month=2" not in months
    days = client.get(url, {"started_at__year": 2025, "started_at__month": 3})
    html = days.content.decode()
    assert "started_at__day=15" in html and "started_at__day=16" in html
    assert "started_at__day=14" not in html
    assert len(days.context["cl"].result_list) == 3
