"""Retention of call bodies: past MESHGATE_AUDIT_RETENTION_DAYS, a record keeps its metadata
(who, when, which model, tokens, cost: what chargeback needs) and loses its request and
response bodies, which are where personal data lives."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .models import CallRecord

BATCH_SIZE = 5000


def retention_cutoff(*, now: dt.datetime | None = None) -> dt.datetime:
    return (now or timezone.now()) - dt.timedelta(days=settings.MESHGATE_AUDIT_RETENTION_DAYS)


def call_bodies_purge(*, now: dt.datetime | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Empty the bodies of records started before the retention cutoff; return how many.

    One short transaction per batch rather than one for everything: the first run on a
    large table must not hold row locks on millions of records while the gateway writes.
    Running it again finds nothing left to do (idempotent), and a run stopped half-way
    has lost nothing: the next one carries on.
    """
    cutoff = retention_cutoff(now=now)
    expired = CallRecord.objects.filter(started_at__lt=cutoff).filter(
        Q(request_body__isnull=False) | Q(response_body__isnull=False)
    )
    purged = 0
    # Each batch starts where the last one ended (keyset), so a first run over a big
    # backlog does not rescan the rows it has already emptied. Rows sharing the boundary
    # time are still found: only their bodies, not their time, say whether they are done.
    resume_at = None
    while True:
        with transaction.atomic():
            pending = expired if resume_at is None else expired.filter(started_at__gte=resume_at)
            batch = list(
                pending.order_by("started_at").values_list("pk", "started_at")[:batch_size]
            )
            if not batch:
                return purged
            purged += CallRecord.objects.filter(pk__in=[pk for pk, _ in batch]).update(
                request_body=None, response_body=None
            )
            resume_at = batch[-1][1]
