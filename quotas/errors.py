"""The 429 a refused client gets: which limit was hit and when it resets, nothing more."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from .ledger import QuotaExceeded
from .ratelimit import RateLimited


def error_response(exc: QuotaExceeded | RateLimited) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, OpenAI-shaped error body, headers) for a refusal."""
    if isinstance(exc, RateLimited):
        seconds = exc.retry_after_seconds
        body = {
            "message": f"Rate limit '{exc.limit_name}' reached; retry in {seconds} s.",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limited",
        }
        return 429, {"error": body}, {"Retry-After": str(seconds)}
    resets = _when(exc.resets_at)
    body = {
        "message": f"Quota '{exc.quota_name}' is exhausted; {resets}.",
        "type": "insufficient_quota",
        "param": None,
        "code": "quota_exceeded",
    }
    # SDKs retry a 429 by default; retrying cannot help until the period resets.
    headers = {"x-should-retry": "false"}
    if exc.resets_at is not None:
        seconds = max(1, int((exc.resets_at - timezone.now()).total_seconds()) + 1)
        headers["Retry-After"] = str(seconds)
    return 429, {"error": body}, headers


def _when(resets_at: datetime | None) -> str:
    if resets_at is None:
        return "room frees as calls in progress end or older spend leaves the window"
    return f"it resets at {resets_at:%Y-%m-%dT%H:%M:%SZ}"
