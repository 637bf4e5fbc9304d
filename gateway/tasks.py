"""The gateway's Celery task: stored responses past the audit retention are deleted."""

from __future__ import annotations

from celery import shared_task

from .responses_store import purge_expired


@shared_task(name="gateway.tasks.purge_expired_responses", soft_time_limit=300, time_limit=360)
def purge_expired_responses() -> int:
    """Daily: Responses API answers older than MESHGATE_AUDIT_RETENTION_DAYS are deleted."""
    return purge_expired()
