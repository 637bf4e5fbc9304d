"""The database path under real concurrency: threads with their own connections, row locks."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection, connections

from conftest import build_cast
from quotas import Admission, QuotaExceeded, runtime
from quotas.services import quota_create, quota_status

from .quota_support import WORST_CASE, admit_sync, principal_of

MID_MAY = datetime(2026, 5, 15, 12, 0, tzinfo=UTC)


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite serializes every writer by itself; row locks matter on PostgreSQL",
)
@pytest.mark.django_db(transaction=True)
def test_twenty_threads_on_database_row_locks_admit_exactly_two(settings):
    settings.REDIS_URL = None
    runtime.start()
    cast = build_cast()
    quota = quota_create(name="Monthly", amount=2 * WORST_CASE, department=cast.marketing)
    alice = principal_of(cast.alice, cast.marketing)
    results: list = []
    barrier = threading.Barrier(20)

    def call() -> None:
        try:
            barrier.wait()
            results.append(admit_sync(alice, cast.gpt4o, now=MID_MAY))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(isinstance(r, Admission) for r in results) == 2
    assert sum(isinstance(r, QuotaExceeded) for r in results) == 18
    assert quota_status(quota, now=MID_MAY)["reserved"] == 2 * WORST_CASE
    assert quota_status(quota, now=MID_MAY)["spent"] == Decimal("0")
    runtime.start()
