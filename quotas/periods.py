"""Quota periods in UTC, and the integer money unit counters use.

Calendar periods (month, week from Monday, day) start at UTC midnight; a call
belongs to the period its start time falls in, so a call that starts at
23:59:59.9 on the last day of a month counts in that month.

A rolling period of N days counts every call whose start time t satisfies
now - N days < t <= now: the call is forgotten exactly N days after it started
(to the millisecond with Redis; to the minute on the database path, whose
rolling counters are per-minute buckets).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from functools import cached_property, lru_cache

from django.core.signals import setting_changed
from django.dispatch import receiver

# Counters hold nano-dollars as integers: exact in Redis' Lua (doubles are exact
# up to 2**53, i.e. 9,007,199 USD per counter) and fine enough for one token.
NANO = Decimal("0.000000001")
NANOS_PER_USD = 1_000_000_000
MAX_AMOUNT_USD = Decimal("9000000")

ROLLING_BUCKET = timedelta(minutes=1)  # database path only
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=1)
def redis_prefix() -> str:
    """Quota and rate-limit keys share the cache's prefix: deployments sharing a Redis
    (or a benchmark next to tests) keep apart. Read once (tests changing CACHES clear it)."""
    from django.conf import settings

    return settings.CACHES.get("default", {}).get("KEY_PREFIX") or "meshgate"


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs) -> None:
    if setting == "CACHES":
        redis_prefix.cache_clear()


def to_nanos(amount: Decimal, *, round_up: bool = False) -> int:
    """USD to integer nano-dollars; reservations round up so they never fall short."""
    rounding = ROUND_CEILING if round_up else ROUND_HALF_UP
    return int((Decimal(amount) * NANOS_PER_USD).to_integral_value(rounding=rounding))


def from_nanos(nanos: int) -> Decimal:
    return (Decimal(int(nanos)) / NANOS_PER_USD).quantize(NANO)


def utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("Quota periods need an aware datetime.")
    return moment.astimezone(UTC)


def epoch_ms(moment: datetime) -> int:
    return int((utc(moment) - EPOCH) / timedelta(milliseconds=1))


@dataclass(frozen=True)
class Window:
    """The span a quota counts at one moment: [start, end) for calendar periods,
    (start, end] for rolling ones. `key` names the counter of a calendar period."""

    start: datetime
    end: datetime
    rolling: bool

    @cached_property
    def key(self) -> str:
        return "rolling" if self.rolling else self.start.strftime("%Y%m%d")

    @property
    def resets_at(self) -> datetime:
        return self.end


def window(period: str, now: datetime, rolling_days: int | None = None) -> Window:
    now = utc(now)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return Window(day, day + timedelta(days=1), False)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return Window(start, start + timedelta(days=7), False)
    if period == "month":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return Window(start, end, False)
    if period == "rolling":
        if not rolling_days or rolling_days < 1:
            raise ValueError("A rolling period needs a number of days.")
        return Window(now - timedelta(days=rolling_days), now, True)
    raise ValueError(f"Unknown quota period {period!r}.")


def alert_period_start(period: str, now: datetime, rolling_days: int | None = None) -> datetime:
    """Alerts fire once per threshold per calendar period; for rolling quotas, per UTC day."""
    if period == "rolling":
        return utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return window(period, now, rolling_days).start


def bucket_start(moment: datetime) -> datetime:
    """The per-minute bucket of a rolling counter on the database path."""
    return utc(moment).replace(second=0, microsecond=0)
