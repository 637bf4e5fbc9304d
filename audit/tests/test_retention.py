"""Retention: bodies of records past MESHGATE_AUDIT_RETENTION_DAYS are emptied, metadata kept."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from audit.models import CallRecord
from audit.retention import call_bodies_purge
from audit.tasks_audit import purge_expired_bodies
from audit.tests.make_records import create, record


@pytest.fixture
def aged(cast, settings):
    settings.MESHGATE_AUDIT_RETENTION_DAYS = 30
    now = timezone.now()
    old = [
        record(
            user=cast.alice,
            llm=cast.gpt4o,
            started_at=now - dt.timedelta(days=31, minutes=i),
            prompt_tokens=100 + i,
            cost=Decimal("0.0123"),
        )
        for i in range(7)
    ]
    recent = [
        record(user=cast.bob, llm=cast.gpt4o_mini, started_at=now - dt.timedelta(days=29))
        for _ in range(3)
    ]
    create(*old, *recent)
    return old, recent


def bodies(records) -> list[tuple]:
    return list(
        CallRecord.objects.filter(request_id__in=[r.request_id for r in records]).values_list(
            "request_body", "response_body"
        )
    )


def test_bodies_past_retention_are_emptied_and_metadata_kept(aged):
    old, recent = aged
    assert call_bodies_purge(batch_size=3) == len(old)
    assert bodies(old) == [(None, None)] * len(old)
    assert all(request is not None and response is not None for request, response in bodies(recent))
    kept = CallRecord.objects.filter(request_id__in=[r.request_id for r in old])
    assert sorted(kept.values_list("prompt_tokens", flat=True)) == list(range(100, 107))
    assert {(r.cost, r.user_id, r.llm_id, r.outcome) for r in kept} == {
        (Decimal("0.0123"), old[0].user.pk, old[0].llm.pk, "ok")
    }
    assert CallRecord.objects.count() == len(old) + len(recent)


def test_purging_twice_changes_nothing_the_second_time(aged):
    assert call_bodies_purge() == 7
    assert call_bodies_purge() == 0


def test_a_record_with_only_one_body_left_is_still_purged(cast, settings):
    settings.MESHGATE_AUDIT_RETENTION_DAYS = 1
    create(
        record(started_at=timezone.now() - dt.timedelta(days=2), request_body=None),
        record(started_at=timezone.now() - dt.timedelta(days=2), response_body=None),
    )
    assert call_bodies_purge() == 2
    assert not CallRecord.objects.filter(response_body__isnull=False).exists()
    assert not CallRecord.objects.filter(request_body__isnull=False).exists()


def test_the_retention_setting_decides_the_cutoff(aged, settings):
    settings.MESHGATE_AUDIT_RETENTION_DAYS = 60
    assert call_bodies_purge() == 0
    settings.MESHGATE_AUDIT_RETENTION_DAYS = 10
    assert call_bodies_purge() == 10


def test_the_beat_task_runs_the_purge(aged):
    import audit.tasks  # what Celery's autodiscovery loads
    from meshsite.celery import app

    assert app.conf.beat_schedule["audit-retention-daily"]["task"] == purge_expired_bodies.name
    assert {"audit.tasks.purge_expired_bodies", "audit.tasks.refresh_measured_speed"} <= set(
        app.tasks
    )
    assert audit.tasks.purge_expired_bodies is purge_expired_bodies
    assert purge_expired_bodies.apply().get() == 7


def test_records_sharing_a_start_time_across_batches_are_all_purged(cast, settings):
    settings.MESHGATE_AUDIT_RETENTION_DAYS = 1
    same = timezone.now() - dt.timedelta(days=3)
    create(*(record(started_at=same) for _ in range(5)))
    assert call_bodies_purge(batch_size=2) == 5
    assert not CallRecord.objects.filter(request_body__isnull=False).exists()
