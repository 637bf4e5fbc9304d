"""Celery tasks of the back office. Each takes a period, calls one service and is idempotent,
so a redelivered message (acks_late, a worker lost mid-task) recomputes the same numbers.

Only database connectivity failures are retried: a bad period or a bug would fail the same way
again. Hard time limits stay under the broker's visibility timeout (MESHGATE_TASK_VISIBILITY,
900 s by default), after which Redis hands an unacknowledged message to another worker.
Measured on 1,000,000 records a month: a month's roll-ups ~11 s, chargeback ~13 s.
"""

from __future__ import annotations

import datetime as dt
import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from . import services
from .tasks_audit import (  # noqa: F401 (registers them)
    maintain_call_partitions,
    purge_expired_bodies,
    refresh_measured_speed,
)

logger = logging.getLogger(__name__)

RETRYABLE = (OperationalError, InterfaceError)
COMMON = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": RETRYABLE,
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 5,
}


def _day(value: str | dt.date) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


@shared_task(soft_time_limit=300, time_limit=360, **COMMON)
def rollup_usage(day: str) -> dict:
    """Recompute one UTC day's roll-ups (day as YYYY-MM-DD)."""
    result = services.usage_rollup_day(day=_day(day))
    return {"day": result.day.isoformat(), "groups": result.groups}


@shared_task(soft_time_limit=780, time_limit=840, **COMMON)
def rollup_usage_range(first: str, last: str) -> list[dict]:
    """Recompute every day from `first` to `last` inclusive: the on-demand backfill."""
    results = services.usage_rollup_range(first=_day(first), last=_day(last))
    return [{"day": r.day.isoformat(), "groups": r.groups} for r in results]


@shared_task(soft_time_limit=300, time_limit=360, **COMMON)
def rollup_recent_usage() -> list[dict]:
    """Hourly: yesterday and today, since late records (long streams) land after midnight."""
    today = timezone.now().astimezone(dt.UTC).date()
    return rollup_usage_range.run((today - dt.timedelta(days=1)).isoformat(), today.isoformat())


@shared_task(bind=True, soft_time_limit=780, time_limit=840, **COMMON)
def build_chargeback(self, month: str, actor_id: int | None = None) -> dict:
    """Build a new current version of every department's report for `month` (YYYY-MM).

    Keyed by the task id: a message redelivered after its reports were committed (the worker
    died before acknowledging) finds them and builds no further version."""
    return _build(month, actor_id, self.request.id or "")


@shared_task(bind=True, soft_time_limit=780, time_limit=840, **COMMON)
def build_last_month_chargeback(self) -> dict:
    """On the 1st: the month before."""
    this_month = timezone.now().astimezone(dt.UTC).date().replace(day=1)
    last_month = (this_month - dt.timedelta(days=1)).replace(day=1)
    return _build(f"{last_month:%Y-%m}", None, self.request.id or "")


def _build(month: str, actor_id: int | None, generation_id: str) -> dict:
    actor = None
    if actor_id is not None:
        from django.contrib.auth import get_user_model

        actor = get_user_model().objects.filter(pk=actor_id).first()
    result = services.chargeback_build(month=month, actor=actor, generation_id=generation_id)
    if result.unassigned_cost:
        # Calls without a department should cost nothing: a non-zero figure is a bug to chase.
        logger.warning(
            "chargeback %s: %s USD over %s calls with no department",
            f"{result.month:%Y-%m}",
            result.unassigned_cost,
            result.unassigned_requests,
        )
    return {
        "month": f"{result.month:%Y-%m}",
        "reports": [report.pk for report in result.reports],
        "unassigned_cost": str(result.unassigned_cost),
    }
