"""Admission: the rate-limit and quota check between "authorize" and "call".

    admission = await admit(principal=..., llm_id=..., connection_id=..., prices=...,
                            prompt_tokens_estimate=..., max_output_tokens=...)
    try:    ... call upstream ...; await admission.settle(actual_cost, actual_tokens)
    finally: await admission.release()   # a no-op once settled

`admit` reserves the call's worst-case cost on every quota the call matches and
counts it in every rate limit that applies, all or nothing, in one Redis script
call; it raises `QuotaExceeded` or `RateLimited` instead. `settle` replaces the
reservations by the actual cost. A reservation nobody settles (a crashed worker)
expires after RESERVATION_TTL.

Counters missing from Redis (never built, flushed, Redis restarted) are rebuilt
from the audit trail before the call is admitted. With Redis unreachable,
admission falls back to row locks in the database (never to "unlimited") and
to per-process rate-limit windows only without REDIS_URL (one process). With
REDIS_URL set and Redis unreachable, a call that a blocking quota or a rate limit
applies to is refused (`QuotaUnavailable`, 503 `quota_unavailable`): every worker
counts in the same place or not at all, so a quota is never overspent and a rate
limit never lifted by an outage seen by some workers only. Calls with no blocking
quota and no rate limit proceed (their non-blocking counters are rebuilt from the
audit trail when Redis is back).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property, lru_cache
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings

from connections.dbguard import run_guarded
from connections.tokens import estimate_prompt_tokens

from ..ids import unique_hex
from ..lookups import db_lookup
from . import config, ledger, scripts
from .config import CallScope, NeedsLoad, QuotaConfig, RateLimitConfig
from .ledger import Held, QuotaExceeded, QuotaUnavailable
from .periods import (
    EPOCH,
    Window,
    alert_period_start,
    epoch_ms,
    from_nanos,
    redis_prefix,
    to_nanos,
    window,
)
from .ratelimit import RateLimited, memory_limiter, redis_keys, retry_seconds
from .resp import LeanRedis, encode_args

logger = logging.getLogger(__name__)

RESERVATION_TTL = timedelta(minutes=15)  # longer than any call's timeouts and fallbacks
DEFAULT_MAX_OUTPUT_TOKENS = 4096  # when neither the request nor the LLM says
REDIS_RETRY_AFTER_FAILURE = 1.0  # seconds refusing before trying Redis again
REDIS_ERRORS = (OSError,)  # connection refused or lost, and timeouts (see .resp)

__all__ = ["Admission", "QuotaExceeded", "RateLimited", "admit", "estimate_prompt_tokens"]


# --- estimating a call's worst case -----------------------------------------------------------


def worst_case_nanos(
    prices: tuple[Decimal, Decimal, Decimal], prompt_tokens: int, output_tokens: int
) -> int:
    micro = _micro_prices(*prices)
    if micro is not None:
        # USD per million tokens in millionths: nanos = tokens * price * 1000 / 1e6, rounded up.
        per_input, per_output = micro
        return -(-(prompt_tokens * per_input + output_tokens * per_output) // 1000)
    input_price, output_price, cached_price = prices
    per_input = max(Decimal(input_price), Decimal(cached_price or 0))
    cost = (prompt_tokens * per_input + output_tokens * Decimal(output_price)) / 1_000_000
    return to_nanos(cost, round_up=True)


@lru_cache(maxsize=1024)
def _micro_prices(input_price, output_price, cached_price) -> tuple[int, int] | None:
    """Prices as integer millionths of a USD (what the catalog stores), or None if finer."""
    per_input = max(Decimal(input_price), Decimal(cached_price or 0)) * 1_000_000
    per_output = Decimal(output_price) * 1_000_000
    if per_input != per_input.to_integral_value() or per_output != per_output.to_integral_value():
        return None
    return int(per_input), int(per_output)


# --- Redis connections, one lean pipelined client per event loop (see .resp) ---------------------


@dataclass
class _Redis:
    url: str
    client: Any
    admit: Any
    settle: Any
    init: Any


_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_redis_down_until = 0.0
_outage_keys: set[str] = set()  # counters counted in the database while Redis was down


def _redis() -> _Redis | None:
    if not settings.REDIS_URL or time.monotonic() < _redis_down_until:
        return None
    loop = asyncio.get_running_loop()
    handle = _clients.get(loop)
    if handle is None or handle.url != settings.REDIS_URL:
        client = LeanRedis(settings.REDIS_URL, timeout=1.0, connect_timeout=1.0)
        handle = _Redis(
            settings.REDIS_URL,
            client,
            client.register_script(scripts.ADMIT),
            client.register_script(scripts.SETTLE),
            client.register_script(scripts.INIT),
        )
        _clients[loop] = handle
    return handle


def _redis_failed(exc: Exception) -> None:
    global _redis_down_until
    _redis_down_until = time.monotonic() + REDIS_RETRY_AFTER_FAILURE
    logger.warning(
        "Redis unreachable (%s): calls under a blocking quota or a rate limit get 503",
        type(exc).__name__,
    )


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


# --- what every call of one scope sends, prepared once ---------------------------------------

REFRESH_SECONDS = 1.0  # how often a process lets a scope's scripts do their housekeeping
_ADMIT_ARGS = 6  # arguments of ADMIT that change per call (see scripts.ADMIT)
_SETTLE_ARGS = 7


@dataclass
class _Shape:
    """The quotas and rate limits one call scope matches, their calendar periods, and
    the encoded script calls but for the few arguments that change per call. Valid
    for calls whose time falls in [valid_from_ms, valid_until_ms) (its calendar
    periods), until a quota or a rate limit changes (it lives in their memo)."""

    quotas: list[QuotaConfig]
    limits: list[tuple[RateLimitConfig, int]]
    windows: list[Window | None]  # the calendar periods; None for rolling ones
    valid_from_ms: int
    valid_until_ms: int
    admit_head: bytes = b""
    admit_tail: bytes = b""
    settle_head: bytes = b""
    settle_tail: bytes = b""
    refresh_at: float = 0.0  # monotonic; the next call after it does the housekeeping

    def plan(self, now: datetime, nanos: int) -> list[Held]:
        return [
            Held(quota, span or window(quota.period, now, quota.rolling_days), nanos)
            for quota, span in zip(self.quotas, self.windows, strict=True)
        ]


def _shape_of(call: CallScope, paid: bool, now: datetime, *, load: bool) -> _Shape:
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
    return _Shape(quotas, limits, windows, valid_from, valid_until)


def _encode_shape(shape: _Shape, handle: _Redis, now: datetime) -> None:
    keys: list[str] = []
    lifetime = RESERVATION_TTL // timedelta(milliseconds=1)
    admit_static: list[Any] = [lifetime, len(shape.quotas), len(shape.limits)]
    settle_static: list[Any] = [len(shape.quotas), len(shape.limits)]
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
    shape.admit_head = handle.admit.head(_ADMIT_ARGS + len(admit_static), keys)
    shape.admit_tail = encode_args(admit_static)
    shape.settle_head = handle.settle.head(_SETTLE_ARGS + len(settle_static), keys)
    shape.settle_tail = encode_args(settle_static)


def _shape(principal, llm_id: int, connection_id: int, paid: bool, now: datetime, now_ms: int):
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
        shape = _shape_of(call, paid, now, load=False)
    except NeedsLoad:
        return None
    shapes[key] = shape
    return shape


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


# --- the admission ---------------------------------------------------------------------------


@dataclass
class Admission:
    """An admitted call's reservations. Settle or release it on every exit path."""

    id: str
    started_at: datetime
    max_output_tokens: int
    worst_case_nanos: int
    department_id: int | None
    shape: _Shape
    tokens: int = 0  # counted in every rate limit
    started_ms: int = 0
    backend: str = "none"  # redis | database | none
    settled: bool = False

    @property
    def worst_case_cost(self) -> Decimal:
        return from_nanos(self.worst_case_nanos)

    @cached_property
    def plan(self) -> list[Held]:
        return self.shape.plan(self.started_at, self.worst_case_nanos)

    @cached_property
    def checks(self) -> list[tuple[RateLimitConfig, int, int]]:
        return [(limit, subject, self.tokens) for limit, subject in self.shape.limits]

    async def settle(self, actual_cost: Decimal, actual_tokens: int) -> None:
        """Replace the reservations by the actual cost and tokens (idempotent)."""
        if self.settled:
            return
        self.settled = True
        # Shielded: a cancelled request (client gone) must still give back its reservation.
        await asyncio.shield(self._settle(to_nanos(Decimal(actual_cost)), int(actual_tokens)))

    async def release(self) -> None:
        """Give the reservations back for a call that cost nothing (idempotent)."""
        await self.settle(Decimal("0"), 0)

    async def _settle(self, actual_nanos: int, actual_tokens: int) -> None:
        spent: list[int] = []
        if self.backend == "redis":
            handle = _redis()
            if handle is None:
                return  # Redis went away: the reservation expires, the audit trail rebuilds
            shape = self.shape
            command = b"".join(
                (
                    shape.settle_head,
                    _bulk(b"%d" % self.started_ms),
                    _bulk(self.id.encode()),
                    _bulk(b"%d" % int(time.time())),
                    _bulk(b"%d" % (self.worst_case_nanos if shape.quotas else 0)),
                    _bulk(b"%d" % actual_nanos),
                    _bulk(b"%d" % self.tokens),
                    _bulk(b"%d" % actual_tokens),
                    shape.settle_tail,
                )
            )
            try:
                spent = await handle.settle.run_encoded(command)
            except REDIS_ERRORS as exc:
                _redis_failed(exc)
                return
        elif self.backend == "database":
            memory_limiter.settle(self.checks, self.id, actual_tokens)
            if self.plan:
                spent = await db_lookup(ledger.db_settle, self.plan, actual_nanos, self.started_at)
        if actual_nanos > 0 and spent:
            await _check_alerts(self, spent)


_alerted: set[tuple[int, datetime, int]] = set()


async def _check_alerts(admission: Admission, spent: list[int]) -> None:
    for quota, nanos in zip(admission.shape.quotas, spent, strict=False):
        if nanos < 0 or not quota.thresholds or quota.amount_nanos <= 0:
            continue
        crossed = [t for t in quota.thresholds if nanos * 100 >= t * quota.amount_nanos]
        if not crossed:
            continue  # most calls: no period to work out
        period_start = alert_period_start(quota.period, admission.started_at)
        due = [t for t in crossed if (quota.id, period_start, t) not in _alerted]
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
                department_id=admission.department_id,
            )
        except Exception:
            logger.exception("Quota alert for quota %s could not be sent", quota.id)
            continue
        _alerted.update((quota.id, period_start, threshold) for threshold in due)


def _load(principal, llm_id: int, connection_id: int, paid: bool, now: datetime) -> _Shape:
    """Off the event loop: read what the memos lack, and the call's shape."""
    config.llm_limits(llm_id, load=True)
    call = CallScope.of(principal, llm_id=llm_id, connection_id=connection_id)
    return _shape_of(call, paid, now, load=True)


async def admit(
    *,
    principal,
    llm_id: int,
    connection_id: int,
    prices: tuple[Decimal, Decimal, Decimal],
    prompt_tokens_estimate: int,
    max_output_tokens: int | None,
    now: datetime | None = None,
) -> Admission:
    """Admit a call or raise QuotaExceeded / RateLimited (see the module docstring)."""
    if now is None:
        now_ms = time.time_ns() // 1_000_000
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
    else:
        now_ms = epoch_ms(now)
    try:
        llm = config.llm_limits(llm_id, load=False)
    except NeedsLoad:
        llm = await db_lookup(config.llm_limits, llm_id)

    # The output bound: the request's max_tokens, capped by what the LLM can produce.
    caps = []
    if llm is not None and llm.max_output_tokens:
        caps.append(llm.max_output_tokens)
    if llm is not None and llm.context_window:
        caps.append(max(1, llm.context_window - prompt_tokens_estimate))
    if max_output_tokens is not None:
        caps.append(max(0, int(max_output_tokens)))
    output_tokens = min(caps) if caps else DEFAULT_MAX_OUTPUT_TOKENS
    nanos = worst_case_nanos(prices, prompt_tokens_estimate, output_tokens)

    paid = nanos > 0
    shape = _shape(principal, llm_id, connection_id, paid, now, now_ms)
    if shape is None:
        shape = await db_lookup(_load, principal, llm_id, connection_id, paid, now)
    admission = Admission(
        id=unique_hex(),
        started_at=now,
        max_output_tokens=output_tokens,
        worst_case_nanos=nanos,
        department_id=getattr(principal, "department_id", None),
        shape=shape,
        tokens=prompt_tokens_estimate + output_tokens,
        started_ms=now_ms,
    )
    if not shape.quotas and not shape.limits:
        return admission

    handle = _redis()
    if handle is not None:
        try:
            await _redis_admit(handle, admission, now)
            admission.backend = "redis"
            return admission
        except REDIS_ERRORS as exc:
            _redis_failed(exc)
    if settings.REDIS_URL and (shape.limits or any(q.blocking for q in shape.quotas)):
        raise QuotaUnavailable
    await _database_admit(admission, now)
    admission.backend = "database"
    return admission


async def _redis_admit(handle: _Redis, admission: Admission, now: datetime) -> None:
    global _outage_keys
    if _outage_keys:
        # Spend counted in the database during an outage is not in these counters:
        # drop them so they are rebuilt from the audit trail.
        stale, _outage_keys = _outage_keys, set()
        await handle.client.delete(*stale)
    shape = admission.shape
    if not shape.admit_head:
        _encode_shape(shape, handle, now)
    for _attempt in range(3):
        clock = time.monotonic()
        refresh = clock >= shape.refresh_at
        if refresh:
            shape.refresh_at = clock + REFRESH_SECONDS
        command = b"".join(
            (
                shape.admit_head,
                _bulk(b"%d" % admission.started_ms),
                _bulk(admission.id.encode()),
                _bulk(b"%d" % (time.time_ns() // 1_000_000)),
                _bulk(b"%d" % admission.worst_case_nanos),
                _bulk(b"%d" % admission.tokens),
                b"$1\r\n1\r\n" if refresh else b"$1\r\n0\r\n",
                shape.admit_tail,
            )
        )
        result = await handle.admit.run_encoded(command)
        code = result[0]
        if code == 0:
            ledger.redis_last_ok = datetime.now(UTC)
            return
        if code == 1:
            held = admission.plan[result[1] - 1]
            raise QuotaExceeded(held.quota.name, _resets_at(held, result[2]))
        if code == 2:
            limit = shape.limits[result[1] - 1][0]
            raise RateLimited(limit.name, retry_seconds(float(result[2])))
        for index in result[1:]:
            await _rebuild(handle, admission.plan[index - 1])
    raise RuntimeError("Quota counters could not be built in Redis.")


def _resets_at(held: Held, oldest_ms: int) -> datetime | None:
    if not held.window.rolling:
        return held.window.end
    if oldest_ms <= 0:
        return None  # only reservations hold the room: it frees when those calls end
    return EPOCH + timedelta(milliseconds=oldest_ms) + (held.window.end - held.window.start)


async def _rebuild(handle: _Redis, held: Held) -> None:
    counter, entries_key = counter_keys(held.quota, held.window)
    entries: list[Any] = []
    if held.window.rolling:
        rows = await db_lookup(ledger.audit_entries, held.quota, held.window)
        total = 0
        for started_at, record_id, cost in rows:
            nanos = to_nanos(cost)
            total += nanos
            entries += [epoch_ms(started_at), f"a{record_id}|{nanos}"]
    else:
        total = to_nanos(await db_lookup(ledger.audit_spend, held.quota, held.window))
    built = await handle.init(
        keys=[counter, entries_key], args=[total, _expire_at(held.quota, held.window), *entries]
    )
    if built:
        logger.info("Quota counter %s rebuilt from the audit trail", counter)


async def _database_admit(admission: Admission, now: datetime) -> None:
    memory_limiter.admit(admission.checks, admission.id, admission.started_ms)
    if not admission.plan:
        return
    try:
        await db_lookup(ledger.db_admit, admission.plan)
    except BaseException:
        memory_limiter.forget(admission.checks, admission.id)
        raise
    if settings.REDIS_URL:
        _outage_keys.update(
            key for held in admission.plan for key in counter_keys(held.quota, held.window)
        )


def reset_for_tests() -> None:
    """Forget per-process state: Redis clients, outage marks, sent alerts, windows."""
    global _redis_down_until
    _clients.clear()
    _redis_down_until = 0.0
    _outage_keys.clear()
    _alerted.clear()
    memory_limiter.clear()
    config.clear()
    ledger.redis_last_ok = None
