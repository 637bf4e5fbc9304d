"""Quota and rate-limit writes, each quota's current standing, and threshold alerts."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.money import usd
from connections.models import ChangeEvent
from connections.services import change_record
from quotas.models import Quota, QuotaAlert, RateLimit

from . import config, ledger
from .periods import MAX_AMOUNT_USD, epoch_ms, from_nanos, to_nanos, window
from .shapes import counter_keys

logger = logging.getLogger(__name__)

SCOPE_FIELDS = ("department", "user", "api_key", "purpose", "connection", "llm")
QUOTA_FIELDS = (
    "name",
    "amount",
    "period",
    "rolling_days",
    "mode",
    "alert_thresholds",
    "is_catch_all",
    "is_active",
    *SCOPE_FIELDS,
)


def validate_quota(quota: Quota) -> None:
    errors: dict[str, str] = {}
    if quota.amount is None or quota.amount <= 0:
        errors["amount"] = "The amount must be more than zero."
    elif quota.amount > MAX_AMOUNT_USD:
        errors["amount"] = f"The amount can be at most {MAX_AMOUNT_USD} USD."
    if quota.period == Quota.Period.ROLLING:
        if not quota.rolling_days:
            errors["rolling_days"] = "A rolling period needs a number of days."
    elif quota.rolling_days:
        errors["rolling_days"] = "Only a rolling period has a number of days."
    thresholds = quota.alert_thresholds or []
    if not isinstance(thresholds, list) or not all(
        isinstance(t, int) and 0 < t <= 1000 for t in thresholds
    ):
        errors["alert_thresholds"] = "Alert thresholds are whole percentages, e.g. [50, 80, 100]."
    else:
        quota.alert_thresholds = sorted(set(thresholds))
    if quota.is_catch_all and any(
        getattr(quota, f"{name}_id" if name != "purpose" else name) for name in SCOPE_FIELDS
    ):
        errors["is_catch_all"] = "The catch-all quota matches by exclusion: leave its scope empty."
    if errors:
        raise ValidationError(errors)
    quota.full_clean(validate_unique=False)


@transaction.atomic
def quota_create(*, actor=None, **fields: Any) -> Quota:
    """Create a quota. Every worker uses it within the cache check delay."""
    unknown = set(fields) - set(QUOTA_FIELDS)
    if unknown:
        raise TypeError(f"Unknown quota fields: {sorted(unknown)}")
    fields.setdefault("alert_thresholds", [50, 80, 100])
    quota = Quota(**fields)
    validate_quota(quota)
    try:
        with transaction.atomic():
            quota.save()
    except IntegrityError:
        raise ValidationError("A quota with that name, or a catch-all quota, already exists.")
    change_record(
        actor=actor,
        event_type=ChangeEvent.Type.QUOTA_CREATED,
        obj=quota,
        quota_id=quota.pk,
        **{name: _shown(getattr(quota, name)) for name in QUOTA_FIELDS},
    )
    return quota


def _shown(value: Any) -> Any:
    """A field's value as the change log keeps it (JSON; objects by name)."""
    if value is None or isinstance(value, bool | int | str | list):
        return value
    if isinstance(value, Quota._meta.get_field("api_key").related_model):
        return value.prefix
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


@transaction.atomic
def quota_update(*, quota: Quota, actor=None, **changes: Any) -> Quota:
    """Change a quota. A change of scope or period starts a counter rebuilt from the audit
    trail (the counter's key carries them); a change of amount keeps the spend."""
    unknown = set(changes) - set(QUOTA_FIELDS)
    if unknown:
        raise TypeError(f"Unknown quota fields: {sorted(unknown)}")
    before = Quota.objects.filter(pk=quota.pk).first()
    for name, value in changes.items():
        setattr(quota, name, value)
    validate_quota(quota)
    try:
        with transaction.atomic():
            quota.save()
    except IntegrityError:
        raise ValidationError("A quota with that name, or a catch-all quota, already exists.")
    changed = {
        name: {"from": _shown(getattr(before, name)), "to": _shown(getattr(quota, name))}
        for name in QUOTA_FIELDS
        if before is not None and _shown(getattr(before, name)) != _shown(getattr(quota, name))
    }
    if changed:
        change_record(
            actor=actor,
            event_type=ChangeEvent.Type.QUOTA_UPDATED,
            obj=quota,
            quota_id=quota.pk,
            changed=changed,
        )
    return quota


@transaction.atomic
def quota_delete(*, quota: Quota, actor=None) -> None:
    """Delete a quota: calls it matched are no longer limited by it (within the cache check
    delay). Its alerts' sent-markers go with it."""
    change_record(
        actor=actor,
        event_type=ChangeEvent.Type.QUOTA_DELETED,
        obj=quota,
        quota_id=quota.pk,
        amount=_shown(quota.amount),
        period=quota.period,
    )
    quota.delete()


@transaction.atomic
def ratelimit_create(*, actor=None, **fields: Any) -> RateLimit:
    limit = RateLimit(**fields)
    if limit.requests_per_minute is None and limit.tokens_per_minute is None:
        raise ValidationError("A rate limit needs requests or tokens per minute.")
    limit.full_clean()
    limit.save()
    return limit


# --- alerts ------------------------------------------------------------------------------------


def _recipients(quota: Quota, department_id: int | None) -> list[str]:
    admins = [email for _name, email in getattr(settings, "ADMINS", [])]
    admins += list(
        get_user_model()
        .objects.filter(is_superuser=True, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )
    department = quota.department
    if department is None and department_id is not None:
        from connections.models import Department

        department = Department.objects.filter(pk=department_id).first()
    contacts = department.contacts.split() if department is not None else []
    return sorted({address.strip().rstrip(",") for address in admins + contacts if address})


def quota_alerts_send(
    *,
    quota_id: int,
    period_start: datetime,
    thresholds: list[int],
    spent: Decimal,
    department_id: int | None = None,
) -> list[int]:
    """E-mail each threshold crossed, once per quota, period and threshold: the
    QuotaAlert row is the sent-marker, so several workers crossing together send one."""
    quota = Quota.objects.select_related("department__group").filter(pk=quota_id).first()
    if quota is None:
        return []
    sent = []
    for threshold in sorted(thresholds):
        try:
            with transaction.atomic():
                QuotaAlert.objects.create(
                    quota=quota, period_start=period_start, threshold=threshold, spent=spent
                )
        except IntegrityError:
            continue  # already sent this period
        sent.append(threshold)
    if sent:
        recipients = _recipients(quota, department_id)
        percent = max(sent)
        subject = f"[Meshgate] Quota {quota.name} at {percent}%"
        body = (
            f"The quota {quota.name!r} has reached {percent}% of its amount this period.\n\n"
            f"Spent: {usd(spent)} of {usd(quota.amount)} "
            f"({quota.get_period_display()}, period from {period_start:%Y-%m-%d %H:%M} UTC).\n"
            + (
                "Calls past the amount are refused.\n"
                if quota.mode == Quota.Mode.BLOCK
                else "This quota only alerts: calls are not refused.\n"
            )
        )
        if recipients:
            from .tasks import send_quota_alert

            send_quota_alert.delay(subject, body, recipients)
        else:
            logger.warning("Quota %s crossed %s%% but has no one to tell", quota.pk, percent)
    return sent


# --- standing --------------------------------------------------------------------------------

_sync_redis: dict[str, Any] = {}


def _redis_client():
    url = settings.REDIS_URL
    if url not in _sync_redis:
        import redis

        _sync_redis[url] = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    return _sync_redis[url]


def quota_status(quota: Quota, *, now: datetime | None = None) -> dict[str, Any]:
    """Spent, reserved and remaining in the quota's current period (read only)."""
    now = now or timezone.now()
    regular, catch_all = config.all_quotas()
    found = [c for c in [*regular, catch_all] if c is not None and c.id == quota.pk]
    cfg = found[0] if found else config.quota_config(quota)
    span = window(cfg.period, now, cfg.rolling_days)
    spent = reserved = None
    if settings.REDIS_URL:
        try:
            spent, reserved = _redis_status(cfg, span, now)
        except Exception as exc:  # any Redis failure: read the database instead
            logger.warning("Quota status from the database (%s)", type(exc).__name__)
    if spent is None:
        spent, reserved = ledger.db_status(cfg, span)
    remaining = max(Decimal("0"), quota.amount - spent - reserved)
    return {
        "period_start": None if span.rolling else span.start,
        "period_end": None if span.rolling else span.end,
        "spent": from_nanos(to_nanos(spent)),
        "reserved": from_nanos(to_nanos(reserved)),
        "remaining": from_nanos(to_nanos(remaining)),
        "percent": float((spent / quota.amount) * 100) if quota.amount else 0.0,
    }


def _redis_status(cfg, span, now) -> tuple[Decimal, Decimal] | tuple[None, None]:
    client = _redis_client()
    counter, entries = counter_keys(cfg, span)
    fields = client.hgetall(counter)
    if b"init" not in fields:
        return ledger.audit_spend(cfg, span), Decimal("0")
    spent = int(fields.get(b"spent") or 0)
    if span.rolling:
        cutoff = epoch_ms(now) - (span.end - span.start).total_seconds() * 1000
        for member in client.zrangebyscore(entries, "-inf", cutoff):
            spent -= int(member.decode().rsplit("|", 1)[1])
    # Reservations past their deadline (crashed workers) are dropped by the next
    # admission that needs the room; they hold none.
    wall_ms = int(time.time() * 1000)
    reserved = 0
    for name, value in fields.items():
        if name.startswith(b"r:"):
            nanos, deadline = value.split(b"|")
            if int(deadline) > wall_ms:
                reserved += int(nanos)
    return from_nanos(spent), from_nanos(reserved)
