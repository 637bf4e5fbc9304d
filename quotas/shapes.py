"""A call scope's shape: the quotas and rate limits it matches, their Redis keys and the
two script calls every call of that scope makes, prepared once and memoized."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from meshsite.lib.redis import Arg, PreparedCall, Script, prepare

from . import config, scripts
from .config import CallScope, NeedsLoad, QuotaConfig, RateLimitConfig
from .ledger import Held
from .periods import Window, epoch_ms, redis_prefix, window
from .ratelimit import redis_keys

RESERVATION_TTL = timedelta(minutes=15)  # longer than any call's timeouts and fallbacks
ADMIT = Script(scripts.ADMIT)
SETTLE = Script(scripts.SETTLE)
INIT = Script(scripts.INIT)


def counter_base(quota: QuotaConfig, span: Window) -> str:
    return f"{redis_prefix()}:quota:{quota.id}:{quota.signature}:{span.key}"


def counter_keys(quota: QuotaConfig, span: Window) -> tuple[str, str]:
    """The counter hash (spent, reserved, reservations) and a rolling period's entries."""
    base = counter_base(quota, span)
    return f"{base}:c", f"{base}:w"


def _expire_at(quota: QuotaConfig, span: Window) -> int:
    """Unix seconds, on the wall clock: a counter outlives its period by two days."""
    wall = datetime.now(UTC)
    end = wall + timedelta(days=quota.rolling_days or 1) if span.rolling else max(span.end, wall)
    return int((end + timedelta(days=2)).timestamp())


REFRESH_SECONDS = 1.0  # how often a process lets a scope's scripts do their housekeeping
ADMIT_ARGS = 6  # arguments of ADMIT that change per call (see scripts.ADMIT)
SETTLE_ARGS = 7


@dataclass
class Shape:
    """The quotas and rate limits one call scope matches, their calendar periods, and
    the script calls prepared but for the few arguments that change per call. Valid
    for calls whose time falls in [valid_from_ms, valid_until_ms) (its calendar
    periods), until a quota or a rate limit changes (it lives in their memo)."""

    quotas: list[QuotaConfig]
    limits: list[tuple[RateLimitConfig, int]]
    windows: list[Window | None]  # the calendar periods; None for rolling ones
    valid_from_ms: int
    valid_until_ms: int
    admit_call: PreparedCall | None = None
    settle_call: PreparedCall | None = None
    refresh_at: float = 0.0  # monotonic; the next call after it does the housekeeping

    def plan(self, now: datetime, nanos: int) -> list[Held]:
        return [
            Held(quota, span or window(quota.period, now, quota.rolling_days), nanos)
            for quota, span in zip(self.quotas, self.windows, strict=True)
        ]


def shape_of(call: CallScope, paid: bool, now: datetime, *, load: bool) -> Shape:
    """Build a scope's shape (the slow path: once per scope and calendar period)."""
    # A call that costs nothing is never held back by a spending quota.
    quotas = config.matching_quotas(call, load=load) if paid else []
    limits = config.matching_rate_limits(call, load=load)
    windows: list[Window | None] = []
    valid_from, valid_until = -(2**62), 2**62
    for quota in quotas:
        span = window(quota.period, now, quota.rolling_days)
        windows.append(None if span.rolling else span)
        if not span.rolling:
            valid_from = max(valid_from, epoch_ms(span.start))
            valid_until = min(valid_until, epoch_ms(span.end))
    return Shape(quotas, limits, windows, valid_from, valid_until)


def prepare_calls(shape: Shape, now: datetime) -> None:
    """The scope's two script calls, with all but their per-call arguments fixed."""
    keys: list[str] = []
    lifetime = RESERVATION_TTL // timedelta(milliseconds=1)
    admit_static: list[Arg] = [lifetime, len(shape.quotas), len(shape.limits)]
    settle_static: list[Arg] = [len(shape.quotas), len(shape.limits)]
    for quota, span in zip(shape.quotas, shape.windows, strict=True):
        span = span or window(quota.period, now, quota.rolling_days)
        keys += counter_keys(quota, span)
        amount = quota.amount_nanos if quota.blocking else -1
        if span.rolling:
            window_ms = (span.end - span.start) // timedelta(milliseconds=1)
            expire = (quota.rolling_days + 2) * 86400
            settle_static.append(expire)
        else:
            window_ms = 0
            expire = int(span.end.timestamp()) + 2 * 86400
            settle_static.append(0)
        admit_static += [amount, window_ms, expire]
    for limit, subject in shape.limits:
        keys += redis_keys(limit, subject)
        rpm, tpm = limit.requests_per_minute, limit.tokens_per_minute
        admit_static += [-1 if rpm is None else rpm, -1 if tpm is None else tpm]
    shape.admit_call = prepare(ADMIT, keys, ADMIT_ARGS, admit_static)
    shape.settle_call = prepare(SETTLE, keys, SETTLE_ARGS, settle_static)


def memo_shape(principal, llm_id: int, connection_id: int, paid: bool, now: datetime, now_ms: int):
    """The call's shape from the memo, or None if building it needs the database."""
    shapes = config.memo().setdefault("shapes", {})
    key = (
        getattr(principal, "user_id", None),
        getattr(principal, "department_id", None),
        getattr(principal, "api_key_id", None),
        getattr(principal, "purpose", "") or "",
        connection_id,
        llm_id,
        paid,
        redis_prefix(),
    )
    shape = shapes.get(key)
    if shape is not None and shape.valid_from_ms <= now_ms < shape.valid_until_ms:
        return shape
    call = CallScope.of(principal, llm_id=llm_id, connection_id=connection_id)
    try:
        shape = shape_of(call, paid, now, load=False)
    except NeedsLoad:
        return None
    shapes[key] = shape
    return shape
