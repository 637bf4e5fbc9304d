"""Concurrent roll-ups on PostgreSQL: two threads recomputing the same days at once.

Runs only against PostgreSQL (DATABASE_URL=postgres://...), as CI's second pass does: SQLite
serializes writers by itself and its in-memory test database cannot be shared by threads.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.conf import settings
from django.db import connection

from audit import services
from audit.models import CallRecord, UsageRollup
from audit.tests.test_rollup import snapshot
from audit.tests.usage_data import MONTH, generate_month

ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not ON_POSTGRES,
        reason="POSTGRES ONLY: concurrent roll-ups need DATABASE_URL=postgres://... (CI runs it)",
    ),
]


def run_in_threads(function, count: int = 2) -> None:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            barrier.wait(timeout=10)
            function()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors


def test_two_concurrent_rollups_of_a_month_give_the_same_rows_as_one(cast):
    CallRecord.objects.bulk_create(generate_month(cast, count=3000))
    last = MONTH.replace(day=31)
    services.usage_rollup_range(first=MONTH, last=last)
    reference = snapshot()
    UsageRollup.objects.all().delete()

    run_in_threads(lambda: services.usage_rollup_range(first=MONTH, last=last))

    assert snapshot() == reference


def test_concurrent_rollups_of_one_day_never_double_count(cast):
    CallRecord.objects.bulk_create(generate_month(cast, count=3000))
    day = dt.date(2026, 10, 31)
    services.usage_rollup_day(day=day)
    reference = snapshot(day=day)

    for _ in range(5):
        run_in_threads(lambda: services.usage_rollup_day(day=day), count=3)
        assert snapshot(day=day) == reference
