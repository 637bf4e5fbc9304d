"""Rate limits: requests and tokens per minute, over a sliding 60-second window.

With Redis the window lives in a sorted set per limit and subject, checked and
updated by the admission script (see `scripts.ADMIT`), so every worker shares
it. Without Redis (the embedded default, or Redis unreachable) each process
keeps the same window in memory: a limit then holds per process.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from .config import RateLimitConfig
from .periods import redis_prefix

WINDOW_MS = 60_000


class RateLimited(Exception):
    """A rate limit has no room for the call now; try again after `retry_after_seconds`."""

    def __init__(self, limit_name: str, retry_after_seconds: int) -> None:
        super().__init__(f"Rate limit {limit_name!r} reached.")
        self.limit_name = limit_name
        self.retry_after_seconds = retry_after_seconds


def redis_keys(limit: RateLimitConfig, subject: int) -> tuple[str, str]:
    base = f"{redis_prefix()}:rl:{limit.id}:{subject}"
    return f"{base}:z", f"{base}:t"


def retry_seconds(retry_ms: float) -> int:
    """Retry-After is whole seconds, rounded up, at least one."""
    return max(1, int(-(-int(retry_ms) // 1000)))


@dataclass
class _Window:
    entries: deque = field(default_factory=deque)  # [time ms, admission id, tokens]
    tokens: int = 0

    def expire(self, now_ms: int) -> None:
        while self.entries and self.entries[0][0] <= now_ms - WINDOW_MS:
            self.tokens -= self.entries.popleft()[2]


class MemoryLimiter:
    """The per-process sliding window, with the same rules as the Redis script."""

    def __init__(self) -> None:
        self._windows: dict[tuple[int, int], _Window] = {}
        self._lock = threading.Lock()

    def admit(
        self, checks: list[tuple[RateLimitConfig, int, int]], admission_id: str, now_ms: int
    ) -> None:
        """checks: (limit, subject, tokens). Raise RateLimited or count the call in all."""
        with self._lock:
            windows = []
            for limit, subject, tokens in checks:
                window = self._windows.setdefault((limit.id, subject), _Window())
                window.expire(now_ms)
                rpm, tpm = limit.requests_per_minute, limit.tokens_per_minute
                if rpm is not None and len(window.entries) + 1 > rpm:
                    oldest = window.entries[0][0] if window.entries else now_ms
                    raise RateLimited(limit.name, retry_seconds(oldest + WINDOW_MS - now_ms))
                if tpm is not None and window.tokens + tokens > tpm:
                    raise RateLimited(
                        limit.name, retry_seconds(self._tokens_free_in(window, tokens, tpm, now_ms))
                    )
                windows.append((window, tokens))
            for window, tokens in windows:
                window.entries.append([now_ms, admission_id, tokens])
                window.tokens += tokens

    @staticmethod
    def _tokens_free_in(window: _Window, tokens: int, tpm: int, now_ms: int) -> int:
        if tokens > tpm:
            return WINDOW_MS
        freed = 0
        for at, _id, held in window.entries:
            freed += held
            if window.tokens - freed + tokens <= tpm:
                return at + WINDOW_MS - now_ms
        return WINDOW_MS

    def settle(
        self, checks: list[tuple[RateLimitConfig, int, int]], admission_id: str, actual: int
    ) -> None:
        """Replace the reserved tokens of this admission by the tokens it used."""
        with self._lock:
            for limit, subject, _tokens in checks:
                window = self._windows.get((limit.id, subject))
                if window is None:
                    continue
                for entry in window.entries:
                    if entry[1] == admission_id:
                        window.tokens += actual - entry[2]
                        entry[2] = actual
                        break

    def forget(self, checks: list[tuple[RateLimitConfig, int, int]], admission_id: str) -> None:
        """Take back an admission refused by a quota after its rate limits counted it."""
        with self._lock:
            for limit, subject, _tokens in checks:
                window = self._windows.get((limit.id, subject))
                if window is None:
                    continue
                for entry in list(window.entries):
                    if entry[1] == admission_id:
                        window.entries.remove(entry)
                        window.tokens -= entry[2]
                        break

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()
