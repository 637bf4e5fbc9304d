"""Celery tasks over the audit trail itself: measured speed, retention and partitions.

Registered under `audit.tasks.*` names (the beat schedule's), and imported by
`audit/tasks.py`, which Celery's autodiscovery loads. All are idempotent.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from .partitions import partitions_ensure
from .retention import call_bodies_purge, call_records_expire
from .speed import llm_speed_refresh

RETRY = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "max_retries": 5,
}


@shared_task(
    name="audit.tasks.refresh_measured_speed", soft_time_limit=300, time_limit=360, **RETRY
)
def refresh_measured_speed() -> int:
    """Each LLM's p50/p95 latency, time to first token and tokens/s over the last 7 days."""
    return llm_speed_refresh()


@shared_task(
    name="audit.tasks.purge_expired_bodies", soft_time_limit=3000, time_limit=3060, **RETRY
)
def purge_expired_bodies() -> int:
    """Daily: bodies of records past MESHGATE_AUDIT_RETENTION_DAYS are emptied."""
    return call_bodies_purge()


@shared_task(
    name="audit.tasks.maintain_call_partitions", soft_time_limit=600, time_limit=660, **RETRY
)
def maintain_call_partitions() -> dict:
    """Daily: the call table's partitions for the months ahead (PostgreSQL; a month without
    one lands in the default partition, split out here), then the records past
    MESHGATE_AUDIT_KEEP_MONTHS removed, whole months at a time."""
    created = partitions_ensure(ahead=settings.MESHGATE_AUDIT_PARTITIONS_AHEAD)
    expired = call_records_expire()
    return {"created": created, "expired": expired.partitions, "rows_deleted": expired.rows}
