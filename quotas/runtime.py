"""What one process knows about quotas beyond the database, in one object made at startup.

`QuotasConfig.ready()` calls `start()`; a test that wants a fresh process (or a second
worker) calls it again (the quota tests' `backend` fixture does, before and after each
test). Nothing else in quotas keeps state in module globals but the memos of
`quotas.config`, which `start()` empties too.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from . import config
from .ratelimit import MemoryLimiter


@dataclass
class QuotaRuntime:
    # One Redis client per event loop, with the URL it was made for.
    clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[str, Any]] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    redis_client: str = "lean"  # meshsite.lib.redis kind: "lean" or "redis-py"
    redis_down_until: float = 0.0  # monotonic: refuse without trying Redis until then
    # Counters counted in the database while Redis was down: dropped from Redis when it is
    # back, so they are rebuilt from the audit trail.
    outage_keys: set[str] = field(default_factory=set)
    alerted: set[tuple[int, datetime, int]] = field(default_factory=set)  # alerts sent
    limiter: MemoryLimiter = field(default_factory=MemoryLimiter)  # rate limits sans Redis
    # When this process last saw Redis work: a database counter seeded before then may
    # be missing spend counted in Redis, so it is re-seeded from the audit trail.
    redis_last_ok: datetime | None = None
    # Settlements run as tasks so an answer never waits for them; held here so they are not
    # garbage-collected mid-flight (the event loop keeps only weak references to tasks).
    settling: set[asyncio.Task[None]] = field(default_factory=set)


current = QuotaRuntime()


def start() -> QuotaRuntime:
    """A new process's state (startup; tests that need a fresh process)."""
    global current
    config.clear()
    current = QuotaRuntime(redis_client=getattr(settings, "MESHGATE_REDIS_CLIENT", "lean"))
    return current
