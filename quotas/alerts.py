"""Alert e-mails: a quota's spend crossed one of its thresholds (see `quota_alerts_send`).

Checked when a call settles, which runs after the answer has gone (`hook.settle_soon`):
the threshold test is arithmetic on the counter Redis or the database returned; only a
crossing not yet alerted in this process goes to the database thread (the sent-marker row,
which makes one alert per quota, period and threshold across workers), and the e-mail
itself is a Celery task (`quotas.tasks.send_quota_alert`): a slow or absent mail server
never holds the database thread the gateway's lookups share.
"""

from __future__ import annotations

import logging
from datetime import datetime

from asgiref.sync import sync_to_async

from connections.dbguard import run_guarded

from . import runtime
from .config import QuotaConfig
from .periods import alert_period_start, from_nanos

logger = logging.getLogger(__name__)


async def check_alerts(
    quotas: list[QuotaConfig], spent: list[int], started_at: datetime, department_id: int | None
) -> None:
    alerted = runtime.current.alerted
    for quota, nanos in zip(quotas, spent, strict=False):
        if nanos < 0 or not quota.thresholds or quota.amount_nanos <= 0:
            continue
        crossed = [t for t in quota.thresholds if nanos * 100 >= t * quota.amount_nanos]
        if not crossed:
            continue  # most calls: no period to work out
        period_start = alert_period_start(quota.period, started_at)
        due = [t for t in crossed if (quota.id, period_start, t) not in alerted]
        if not due:
            continue
        from .services import quota_alerts_send

        try:
            await sync_to_async(run_guarded)(
                quota_alerts_send,
                quota_id=quota.id,
                period_start=period_start,
                thresholds=due,
                spent=from_nanos(nanos),
                department_id=department_id,
            )
        except Exception:
            logger.exception("Quota alert for quota %s could not be sent", quota.id)
            continue
        alerted.update((quota.id, period_start, threshold) for threshold in due)
