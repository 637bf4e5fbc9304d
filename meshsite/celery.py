"""Celery app: Redis broker when REDIS_URL is set, eager in-process tasks otherwise."""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshsite.settings")

app = Celery("meshsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The beat schedule lives in code. Tasks are registered by the audit app.
app.conf.beat_schedule = {
    "rollup-usage-hourly": {
        "task": "audit.tasks.rollup_recent_usage",
        "schedule": crontab(minute=5),
    },
    "chargeback-monthly": {
        "task": "audit.tasks.build_last_month_chargeback",
        "schedule": crontab(minute=30, hour=1, day_of_month=1),
    },
    "measured-speed-hourly": {
        "task": "audit.tasks.refresh_measured_speed",
        "schedule": crontab(minute=15),
    },
    "audit-retention-daily": {
        "task": "audit.tasks.purge_expired_bodies",
        "schedule": crontab(minute=45, hour=2),
    },
    "audit-partitions-daily": {
        "task": "audit.tasks.maintain_call_partitions",
        "schedule": crontab(minute=15, hour=3),
    },
    "stored-responses-retention-daily": {
        "task": "gateway.tasks.purge_expired_responses",
        "schedule": crontab(minute=50, hour=2),
    },
}
