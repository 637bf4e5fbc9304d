"""Celery tasks of quotas: the alert e-mail, sent by a worker, not by the gateway.

The gateway decides that a threshold was crossed and writes its sent-marker (`QuotaAlert`,
once per quota, period and threshold across workers) when a call settles; the mail server,
which may be slow or away, is a worker's business. Without Redis (embedded, one process)
Celery runs tasks eagerly: the mail leaves from the settlement's database thread as before.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail


@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(OSError,),  # smtplib's errors and refused connections
    retry_backoff=30,
    retry_backoff_max=600,
    max_retries=5,
    soft_time_limit=60,
    time_limit=90,
)
def send_quota_alert(subject: str, body: str, recipients: list[str]) -> int:
    return send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)
