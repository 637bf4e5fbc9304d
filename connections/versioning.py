"""Cross-process invalidation of in-memory caches.

Each worker keeps what it needs (keys, models, grants, prices) in memory and
checks a version number in the shared cache at most once every
MESHGATE_CACHE_CHECK_SECONDS. Signals bump the number when an admin changes
something, so every process drops its copy within that delay.

On an event loop the check must not block every call in flight on a network
read: the gateway starts a refresher on its loop (`start_refresher`) that reads
every scope's version in one go, in a worker thread, every
MESHGATE_CACHE_CHECK_SECONDS, and empties the memos whose version moved. On
that loop a memo never reads the shared cache itself (but for its first check).
Elsewhere (sync code, short-lived loops, or a check interval of 0), `fresh()`
reads the version when the interval has passed, as it always did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from django.conf import settings
from django.core.cache import cache

CATALOG = "catalog"  # connections, LLMs, aliases, grants, group membership, departments
KEYS = "keys"  # API keys

_PREFIX = "meshgate:version:"
logger = logging.getLogger(__name__)


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
        _memos.append(self)

    def fresh(self) -> dict:
        if self._version is not None and _refreshed_here():
            return self.data  # the loop's refresher keeps it current
        now = time.monotonic()
        if now - self._checked_at >= settings.MESHGATE_CACHE_CHECK_SECONDS:
            self._checked_at = now
            self.apply(current(self.scope))
        return self.data

    def apply(self, version: int) -> None:
        if version != self._version:
            self._version = version
            self.data = {}

    def clear(self) -> None:
        self.data = {}
        self._version = None
        self._checked_at = 0.0


_memos: list[VersionedMemo] = []
_refresher: asyncio.Task | None = None


def _refreshed_here() -> bool:
    if _refresher is None or _refresher.done():
        return False
    try:
        return _refresher.get_loop() is asyncio.get_running_loop()
    except RuntimeError:
        return False


def _read_versions(scopes: list[str]) -> dict[str, int]:
    found = cache.get_many([_PREFIX + scope for scope in scopes])
    versions = {}
    for scope in scopes:
        value = found.get(_PREFIX + scope)
        versions[scope] = int(value) if value is not None else current(scope)
    return versions


async def _refresh_forever() -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(settings.MESHGATE_CACHE_CHECK_SECONDS)
        scopes = sorted({memo.scope for memo in _memos})
        try:
            versions = await loop.run_in_executor(None, _read_versions, scopes)
        except Exception as exc:  # the shared cache is away: keep what we have, try again
            logger.warning("versioning: the shared cache did not answer (%s)", type(exc).__name__)
            continue
        for memo in _memos:
            memo.apply(versions[memo.scope])


def start_refresher() -> None:
    """Keep this loop's memos current from a background task (the gateway's lifespan).

    Only when the shared cache is remote and the interval is above 0: with the
    local-memory cache a read costs nothing and is done in place.
    """
    global _refresher
    if _local_cache() or settings.MESHGATE_CACHE_CHECK_SECONDS <= 0:
        return
    if _refresher is None or _refresher.done():
        _refresher = asyncio.get_running_loop().create_task(_refresh_forever())


async def stop_refresher() -> None:
    global _refresher
    task, _refresher = _refresher, None
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _local_cache() -> bool:
    return "locmem" in settings.CACHES["default"]["BACKEND"].lower()
