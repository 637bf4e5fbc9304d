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
to per-process rate-limit windows; without REDIS_URL that is the only path.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from ..ids import unique_hex
from . import config, ledger, scripts
from .config import CallScope, NeedsLoad, QuotaConfig, RateLimitConfig
from .ledger import Held, QuotaExceeded
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
from .resp import LeanRedis

logger = logging.getLogger(__name__)

RESERVATION_TTL = timedelta(minutes=15)  # longer than any call's timeouts and fallbacks
DEFAULT_MAX_OUTPUT_TOKENS = 4096  # when neither the request nor the LLM says
REDIS_RETRY_AFTER_FAILURE = 5.0  # seconds on the database path before trying Redis again
REDIS_ERRORS = (OSError,)  # connection refused or lost, and timeouts (see .resp)

__all__ = ["Admission", "QuotaExceeded", "RateLimited", "admit", "estimate_prompt_tokens"]


# --- estimating a call's worst case -----------------------------------------------------------


def _text_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(item) for item in value)
    if isinstance(value, dict):
        return sum(_text_length(v) for k, v in value.items() if k not in {"image_url", "type"})
    if isinstance(value, int):
        return 4  # a token id in a pre-tokenized embedding input
    return 0


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens, estimated without a tokenizer: ~4 characters per token (OpenAI's
    rule of thumb for English) plus 4 per message and 3 for the reply's priming.
    The reservation is corrected by `settle`; a prompt denser than that (code,
    non-Latin scripts) can make the actual cost exceed the reservation."""
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(_text_length(message) for message in messages)
        return math.ceil(chars / 4) + 4 * len(messages) + 3
    return math.ceil(_text_length(body.get("input", "")) / 4) + 1


def worst_case_nanos(
    prices: tuple[Decimal, Decimal, Decimal], prompt_tokens: int, output_tokens: int
) -> int:
    input_price, output_price, cached_price = prices
    per_input = max(Decimal(input_price), Decimal(cached_price or 0))
    cost = (prompt_tokens * per_input + output_tokens * Decimal(output_price)) / 1_000_000
    return to_nanos(cost, round_up=True)


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
    logger.warning("Redis unreachable (%s): quotas use database row locks", type(exc).__name__)


def counter_base(quota: QuotaConfig, span: Window) -> str:
    return f"{redis_prefix()}:quota:{quota.id}:{quota.signature}:{span.key}"


def _expire_at(quota: QuotaConfig, span: Window) -> int:
    """Unix seconds, on the wall clock: a counter outlives its period by two days."""
    wall = datetime.now(UTC)
    end = wall + timedelta(days=quota.rolling_days or 1) if span.rolling else max(span.end, wall)
    return int((end + timedelta(days=2)).timestamp())


# --- the admission ---------------------------------------------------------------------------


@dataclass
class Admission:
    """An admitted call's reservations. Settle or release it on every exit path."""

    id: str
    started_at: datetime
    max_output_tokens: int
    worst_case_cost: Decimal
    department_id: int | None
    plan: list[Held] = field(default_factory=list)
    checks: list[tuple[RateLimitConfig, int, int]] = field(default_factory=list)
    backend: str = "none"  # redis | database | none
    settled: bool = False

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
            keys, args = (
                _keys(self.plan, self.checks),
                [
                    epoch_ms(self.started_at),
                    self.id,
                    len(self.plan),
                    len(self.checks),
                ],
            )
            for held in self.plan:
                args += [
                    actual_nanos,
                    int(held.window.rolling),
                    _expire_at(held.quota, held.window),
                ]
            for _limit, _subject, tokens in self.checks:
                args += [tokens, actual_tokens]
            try:
                spent = [int(value) for value in await handle.settle(keys=keys, args=args)]
            except REDIS_ERRORS as exc:
                _redis_failed(exc)
                return
        elif self.backend == "database":
            memory_limiter.settle(self.checks, self.id, actual_tokens)
            if self.plan:
                spent = await sync_to_async(ledger.db_settle)(
                    self.plan, actual_nanos, self.started_at
                )
        if actual_nanos > 0:
            await _check_alerts(self, spent)


_alerted: set[tuple[int, datetime, int]] = set()


async def _check_alerts(admission: Admission, spent: list[int]) -> None:
    for held, nanos in zip(admission.plan, spent, strict=False):
        quota = held.quota
        if nanos < 0 or not quota.thresholds or quota.amount_nanos <= 0:
            continue
        period_start = alert_period_start(quota.period, admission.started_at)
        due = [
            threshold
            for threshold in quota.thresholds
            if nanos * 100 >= threshold * quota.amount_nanos
            and (quota.id, period_start, threshold) not in _alerted
        ]
        if not due:
            continue
        from .services import quota_alerts_send

        try:
            await sync_to_async(quota_alerts_send)(
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


def _keys(plan: list[Held], checks: list[tuple[RateLimitConfig, int, int]]) -> list[str]:
    keys = []
    for held in plan:
        base = counter_base(held.quota, held.window)
        keys += [f"{base}:h", f"{base}:x", f"{base}:w"]
    for limit, subject, _tokens in checks:
        keys += list(redis_keys(limit, subject))
    return keys


def _resolve(call: CallScope, llm_id: int, load: bool):
    return (
        config.matching_quotas(call, load=load),
        config.matching_rate_limits(call, load=load),
        config.llm_limits(llm_id, load=load),
    )


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
    now = now or timezone.now()
    call = CallScope.of(principal, llm_id=llm_id, connection_id=connection_id)
    try:
        quotas, limits, llm = _resolve(call, llm_id, False)
    except NeedsLoad:
        quotas, limits, llm = await sync_to_async(_resolve)(call, llm_id, True)

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

    admission = Admission(
        id=unique_hex(),
        started_at=now,
        max_output_tokens=output_tokens,
        worst_case_cost=from_nanos(nanos),
        department_id=call.department_id,
    )
    # A call that costs nothing is never held back by a spending quota.
    if nanos > 0:
        admission.plan = [
            Held(quota, window(quota.period, now, quota.rolling_days), nanos) for quota in quotas
        ]
    tokens = prompt_tokens_estimate + output_tokens
    admission.checks = [(limit, subject, tokens) for limit, subject in limits]
    if not admission.plan and not admission.checks:
        return admission

    handle = _redis()
    if handle is not None:
        try:
            await _redis_admit(handle, admission, now)
            admission.backend = "redis"
            return admission
        except REDIS_ERRORS as exc:
            _redis_failed(exc)
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
    plan, checks = admission.plan, admission.checks
    wall = datetime.now(UTC)
    args: list[Any] = [
        epoch_ms(now),
        admission.id,
        epoch_ms(wall),
        epoch_ms(wall + RESERVATION_TTL),
        len(plan),
        len(checks),
    ]
    for held in plan:
        amount = held.quota.amount_nanos if held.quota.blocking else -1
        window_ms = (held.window.end - held.window.start) // timedelta(milliseconds=1)
        args += [amount, held.nanos, int(held.window.rolling), window_ms]
        args.append(_expire_at(held.quota, held.window))
    for limit, _subject, tokens in checks:
        rpm, tpm = limit.requests_per_minute, limit.tokens_per_minute
        args += [-1 if rpm is None else rpm, -1 if tpm is None else tpm, tokens]
    keys = _keys(plan, checks)
    for _attempt in range(3):
        result = await handle.admit(keys=keys, args=args)
        code = int(result[0])
        if code == 0:
            ledger.redis_last_ok = timezone.now()
            return
        if code == 1:
            held = plan[int(result[1]) - 1]
            raise QuotaExceeded(held.quota.name, _resets_at(held, int(result[2])))
        if code == 2:
            limit = checks[int(result[1]) - 1][0]
            raise RateLimited(limit.name, retry_seconds(float(result[2])))
        for index in result[1:]:
            await _rebuild(handle, plan[int(index) - 1])
    raise RuntimeError("Quota counters could not be built in Redis.")


def _resets_at(held: Held, oldest_ms: int) -> datetime | None:
    if not held.window.rolling:
        return held.window.end
    if oldest_ms <= 0:
        return None  # only reservations hold the room: it frees when those calls end
    return EPOCH + timedelta(milliseconds=oldest_ms) + (held.window.end - held.window.start)


async def _rebuild(handle: _Redis, held: Held) -> None:
    base = counter_base(held.quota, held.window)
    entries: list[Any] = []
    if held.window.rolling:
        rows = await sync_to_async(ledger.audit_entries)(held.quota, held.window)
        total = 0
        for started_at, record_id, cost in rows:
            nanos = to_nanos(cost)
            total += nanos
            entries += [epoch_ms(started_at), f"a{record_id}|{nanos}"]
    else:
        total = to_nanos(await sync_to_async(ledger.audit_spend)(held.quota, held.window))
    built = await handle.init(
        keys=[f"{base}:h", f"{base}:w"], args=[total, _expire_at(held.quota, held.window), *entries]
    )
    if built:
        logger.info("Quota counter %s rebuilt from the audit trail", base)


async def _database_admit(admission: Admission, now: datetime) -> None:
    now_ms = epoch_ms(now)
    memory_limiter.admit(admission.checks, admission.id, now_ms)
    if not admission.plan:
        return
    try:
        await sync_to_async(ledger.db_admit)(admission.plan)
    except BaseException:
        memory_limiter.forget(admission.checks, admission.id)
        raise
    if settings.REDIS_URL:
        _outage_keys.update(
            f"{counter_base(held.quota, held.window)}:{suffix}"
            for held in admission.plan
            for suffix in ("h", "w")
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
