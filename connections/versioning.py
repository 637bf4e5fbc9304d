"""Cross-process invalidation of in-memory caches.

Each worker keeps what it needs (keys, models, grants, prices) in memory and
checks a version number in the shared cache at most once every
MESHGATE_CACHE_CHECK_SECONDS. Signals bump the number when an admin changes
something, so every process drops its copy within that delay.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache

CATALOG = "catalog"  # connections, LLMs, aliases, grants, group membership, departments
KEYS = "keys"  # API keys

_PREFIX = "meshgate:version:"


def bump(scope: str) -> None:
    key = _PREFIX + scope
    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, int(time.time() * 1000), timeout=None)


def current(scope: str) -> int:
    value = cache.get(_PREFIX + scope)
    if value is None:
        value = int(time.time() * 1000)
        cache.add(_PREFIX + scope, value, timeout=None)
        value = cache.get(_PREFIX + scope, value)
    return int(value)


class VersionedMemo:
    """A per-process dict that empties itself when the shared version moves."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.data: dict = {}
        self._version: int | None = None
        self._checked_at = 0.0

    def fresh(self) -> dict:
        now = time.monotonic()
        if now - self._checked_at >= settings.MESHGATE_CACHE_CHECK_SECONDS:
            self._checked_at = now
            version = current(self.scope)
            if version != self._version:
                self._version = version
                self.data = {}
        return self.data

    def clear(self) -> None:
        self.data = {}
        self._version = None
        self._checked_at = 0.0
