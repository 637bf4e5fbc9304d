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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property
from typing import Any

from django.conf import settings

from connections.dbguard import lookup as db_lookup
from meshsite.lib import redis
from meshsite.lib.ids import unique_hex

from . import config, ledger, runtime
from .alerts import check_alerts
from .config import CallScope, NeedsLoad, RateLimitConfig
from .estimate import estimate_prompt_tokens, worst_case_nanos
from .ledger import Held, QuotaExceeded, QuotaUnavailable
from .periods import EPOCH, epoch_ms, from_nanos, to_nanos
from .ratelimit import RateLimited, retry_seconds
from .shapes import INIT, REFRESH_SECONDS, Shape, counter_keys, memo_shape, prepare_calls, shape_of

logger = logging.getLogger(__name__)

DEFAULT_MAX_OUTPUT_TOKENS = 4096  # when neither the request nor the LLM says
REDIS_RETRY_AFTER_FAILURE = 1.0  # seconds refusing before trying Redis again
REDIS_ERRORS = (OSError,)  # connection refused or lost, and timeouts (meshsite.lib.redis)

__all__ = [
    "Admission",
    "QuotaExceeded",
    "QuotaUnavailable",
    "RateLimited",
    "admit",
    "estimate_prompt_tokens",
    "worst_case_nanos",
]


# --- Redis: one client per event loop (meshsite.lib.redis) ------------------------------------


def _redis() -> redis.Redis | None:
    state = runtime.current
    if not settings.REDIS_URL or time.monotonic() < state.redis_down_until:
        return None
    loop = asyncio.get_running_loop()
    known = state.clients.get(loop)
    if known is not None and known[0] == settings.REDIS_URL:
        return known[1]
    client = redis.connect(
        settings.REDIS_URL, timeout=1.0, connect_timeout=1.0, kind=state.redis_client
    )
    state.clients[loop] = (settings.REDIS_URL, client)
    return client


def _redis_failed(exc: Exception) -> None:
    runtime.current.redis_down_until = time.monotonic() + REDIS_RETRY_AFTER_FAILURE
    logger.warning(
        "Redis unreachable (%s): calls under a blocking quota or a rate limit get 503",
        type(exc).__name__,
    )


def _expire_at(quota, span) -> int:
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
    worst_case_nanos: int
    department_id: int | None
    shape: Shape
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
            client = _redis()
            if client is None:
                return  # Redis went away: the reservation expires, the audit trail rebuilds
            shape = self.shape
            assert shape.settle_call is not None  # prepared when the call was admitted
            try:
                spent = await client.call(
                    shape.settle_call,
                    self.started_ms,
                    self.id,
                    int(time.time()),
                    self.worst_case_nanos if shape.quotas else 0,
                    actual_nanos,
                    self.tokens,
                    actual_tokens,
                )
            except REDIS_ERRORS as exc:
                _redis_failed(exc)
                return
        elif self.backend == "database":
            runtime.current.limiter.settle(self.checks, self.id, actual_tokens)
            if self.plan:
                spent = await db_lookup(ledger.db_settle, self.plan, actual_nanos, self.started_at)
        if actual_nanos > 0 and spent:
            await check_alerts(self.shape.quotas, spent, self.started_at, self.department_id)


def _load(principal, llm_id: int, connection_id: int, paid: bool, now: datetime) -> Shape:
    """Off the event loop: read what the memos lack, and the call's shape."""
    config.llm_limits(llm_id, load=True)
    call = CallScope.of(principal, llm_id=llm_id, connection_id=connection_id)
    return shape_of(call, paid, now, load=True)


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
    shape = memo_shape(principal, llm_id, connection_id, paid, now, now_ms)
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

    client = _redis()
    if client is not None:
        try:
            await _redis_admit(client, admission, now)
            admission.backend = "redis"
            return admission
        except REDIS_ERRORS as exc:
            _redis_failed(exc)
    if settings.REDIS_URL and (shape.limits or any(q.blocking for q in shape.quotas)):
        raise QuotaUnavailable
    await _database_admit(admission, now)
    admission.backend = "database"
    return admission


async def _redis_admit(client: redis.Redis, admission: Admission, now: datetime) -> None:
    state = runtime.current
    if state.outage_keys:
        # Spend counted in the database during an outage is not in these counters:
        # drop them so they are rebuilt from the audit trail.
        stale, state.outage_keys = state.outage_keys, set()
        await client.delete(*stale)
    shape = admission.shape
    if shape.admit_call is None:
        prepare_calls(shape, now)
    assert shape.admit_call is not None
    for _attempt in range(3):
        clock = time.monotonic()
        refresh = clock >= shape.refresh_at
        if refresh:
            shape.refresh_at = clock + REFRESH_SECONDS
        result = await client.call(
            shape.admit_call,
            admission.started_ms,
            admission.id,
            time.time_ns() // 1_000_000,
            admission.worst_case_nanos,
            admission.tokens,
            1 if refresh else 0,
        )
        code = result[0]
        if code == 0:
            state.redis_last_ok = datetime.now(UTC)
            return
        if code == 1:
            held = admission.plan[result[1] - 1]
            raise QuotaExceeded(held.quota.name, _resets_at(held, result[2]))
        if code == 2:
            limit = shape.limits[result[1] - 1][0]
            raise RateLimited(limit.name, retry_seconds(float(result[2])))
        for index in result[1:]:
            await _rebuild(client, admission.plan[index - 1])
    raise RuntimeError("Quota counters could not be built in Redis.")


def _resets_at(held: Held, oldest_ms: int) -> datetime | None:
    if not held.window.rolling:
        return held.window.end
    if oldest_ms <= 0:
        return None  # only reservations hold the room: it frees when those calls end
    return EPOCH + timedelta(milliseconds=oldest_ms) + (held.window.end - held.window.start)


async def _rebuild(client: redis.Redis, held: Held) -> None:
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
    built = await client.evalsha(
        INIT, [counter, entries_key], [total, _expire_at(held.quota, held.window), *entries]
    )
    if built:
        logger.info("Quota counter %s rebuilt from the audit trail", counter)


async def _database_admit(admission: Admission, now: datetime) -> None:
    limiter = runtime.current.limiter
    limiter.admit(admission.checks, admission.id, admission.started_ms)
    if not admission.plan:
        return
    try:
        await db_lookup(ledger.db_admit, admission.plan)
    except BaseException:
        limiter.forget(admission.checks, admission.id)
        raise
    if settings.REDIS_URL:
        runtime.current.outage_keys.update(
            key for held in admission.plan for key in counter_keys(held.quota, held.window)
        )
