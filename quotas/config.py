"""What admission needs of quotas, rate limits and LLMs, held in memory per process.

Loaded once and reused until an admin changes a quota or a rate limit (signals
bump the "quotas" version) or the catalog (the "catalog" version): steady-state
admission reads nothing from the database.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from connections import versioning

from .periods import to_nanos

QUOTAS = "quotas"  # the version scope bumped by quotas.signals

_quota_memo = versioning.VersionedMemo(QUOTAS)


class NeedsLoad(Exception):
    """Raised with load=False when the answer is not in memory: call again off the loop."""


_catalog_memo = versioning.VersionedMemo(versioning.CATALOG)


@dataclass(frozen=True)
class CallScope:
    """Who makes a call and what it calls: what quotas and rate limits match on."""

    user_id: int | None
    department_id: int | None
    api_key_id: int | None
    purpose: str
    connection_id: int | None
    llm_id: int | None

    @classmethod
    def of(cls, principal, *, llm_id: int | None, connection_id: int | None) -> CallScope:
        return cls(
            user_id=getattr(principal, "user_id", None),
            department_id=getattr(principal, "department_id", None),
            api_key_id=getattr(principal, "api_key_id", None),
            purpose=getattr(principal, "purpose", "") or "",
            connection_id=connection_id,
            llm_id=llm_id,
        )


@dataclass(frozen=True)
class QuotaConfig:
    id: int
    name: str
    amount_nanos: int
    period: str
    rolling_days: int | None
    blocking: bool
    thresholds: tuple[int, ...]
    catch_all: bool
    department_id: int | None
    user_id: int | None
    api_key_id: int | None
    purpose: str
    connection_id: int | None
    llm_id: int | None

    def matches(self, call: CallScope) -> bool:
        return (
            (self.department_id is None or self.department_id == call.department_id)
            and (self.user_id is None or self.user_id == call.user_id)
            and (self.api_key_id is None or self.api_key_id == call.api_key_id)
            and (not self.purpose or self.purpose == call.purpose)
            and (self.connection_id is None or self.connection_id == call.connection_id)
            and (self.llm_id is None or self.llm_id == call.llm_id)
        )

    @cached_property
    def signature(self) -> str:
        """Changes when what the counter counts changes (scope or period), not the amount:
        a re-scoped quota starts a new counter, rebuilt from the audit trail."""
        text = repr(
            (
                self.period,
                self.rolling_days,
                self.catch_all,
                self.department_id,
                self.user_id,
                self.api_key_id,
                self.purpose,
                self.connection_id,
                self.llm_id,
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RateLimitConfig:
    id: int
    name: str
    scope: str  # api_key | department | llm
    target_id: int | None
    requests_per_minute: int | None
    tokens_per_minute: int | None

    def subject(self, call: CallScope) -> int | None:
        """The id this call is counted under, or None when the limit does not apply."""
        value = {
            "api_key": call.api_key_id,
            "department": call.department_id,
            "llm": call.llm_id,
        }[self.scope]
        if value is None or (self.target_id is not None and self.target_id != value):
            return None
        return value


@dataclass(frozen=True)
class LLMLimits:
    connection_id: int
    max_output_tokens: int | None
    context_window: int | None


def quota_config(quota) -> QuotaConfig:
    return QuotaConfig(
        id=quota.pk,
        name=quota.name,
        amount_nanos=to_nanos(quota.amount),
        period=quota.period,
        rolling_days=quota.rolling_days,
        blocking=quota.mode == "block",
        thresholds=tuple(sorted({int(t) for t in quota.alert_thresholds or []})),
        catch_all=quota.is_catch_all,
        department_id=quota.department_id,
        user_id=quota.user_id,
        api_key_id=quota.api_key_id,
        purpose=quota.purpose,
        connection_id=quota.connection_id,
        llm_id=quota.llm_id,
    )


def _load_quotas() -> tuple[list[QuotaConfig], QuotaConfig | None]:
    from quotas.models import Quota

    configs = [quota_config(quota) for quota in Quota.objects.filter(is_active=True).order_by("pk")]
    catch_all = next((c for c in configs if c.catch_all), None)
    return [c for c in configs if not c.catch_all], catch_all


def _load_rate_limits() -> list[RateLimitConfig]:
    from quotas.models import RateLimit

    limits = []
    for limit in RateLimit.objects.filter(is_active=True).order_by("pk"):
        target = {"api_key": limit.api_key_id, "department": limit.department_id}.get(
            limit.scope, limit.llm_id
        )
        limits.append(
            RateLimitConfig(
                id=limit.pk,
                name=limit.name,
                scope=limit.scope,
                target_id=target,
                requests_per_minute=limit.requests_per_minute,
                tokens_per_minute=limit.tokens_per_minute,
            )
        )
    return limits


def memo() -> dict:
    """This process's memo of quota and rate-limit answers: emptied when an admin changes
    a quota or a rate limit, so what admission keeps in it is never stale."""
    return _quota_memo.fresh()


def all_quotas(*, load: bool = True) -> tuple[list[QuotaConfig], QuotaConfig | None]:
    data = _quota_memo.fresh()
    if "quotas" not in data:
        if not load:
            raise NeedsLoad
        data["quotas"] = _load_quotas()
    return data["quotas"]


def matching_quotas(call: CallScope, *, load: bool = True) -> list[QuotaConfig]:
    """Every active quota the call matches; the catch-all only when none other does."""
    data = _quota_memo.fresh()
    cache = data.setdefault("matches", {})
    found = cache.get(call)
    if found is None:
        regular, catch_all = all_quotas(load=load)
        found = [quota for quota in regular if quota.matches(call)]
        if not found and catch_all is not None:
            found = [catch_all]
        cache[call] = found
    return found


def matching_rate_limits(
    call: CallScope, *, load: bool = True
) -> list[tuple[RateLimitConfig, int]]:
    data = _quota_memo.fresh()
    if "rate_limits" not in data:
        if not load:
            raise NeedsLoad
        data["rate_limits"] = _load_rate_limits()
    found = []
    for limit in data["rate_limits"]:
        subject = limit.subject(call)
        if subject is not None:
            found.append((limit, subject))
    return found


def llm_limits(llm_id: int, *, load: bool = True) -> LLMLimits | None:
    data = _catalog_memo.fresh()
    cache = data.setdefault("quota_llm_limits", {})
    if llm_id not in cache:
        if not load:
            raise NeedsLoad
        from connections.models import LLM

        row = (
            LLM.objects.filter(pk=llm_id)
            .values("connection_id", "max_output_tokens", "context_window")
            .first()
        )
        cache[llm_id] = LLMLimits(**row) if row else None
    return cache[llm_id]


def clear() -> None:
    """Drop this process's copies (tests, and after a quota change in this process)."""
    _quota_memo.clear()
    _catalog_memo.clear()
