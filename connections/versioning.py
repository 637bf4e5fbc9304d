"""Cross-process invalidation of in-memory caches.

Each worker keeps what it needs (keys, models, grants, prices) in memory and
checks a version number in the shared cache at most once every
MESHGATE_CACHE_CHECK_SECONDS. Signals bump the number when an admin changes
something, so every process drops its copy within that delay.

On an event loop the check must not block every call in flight on a network
read: the gateway starts a refresher on its loop (`memos.start_refresher`) that reads
every scope's version in one go, in a worker thread, every
MESHGATE_CACHE_CHECK_SECONDS, and empties the memos whose version moved. On
that loop a memo never reads the shared cache itself (but for its first check).
Elsewhere (sync code, short-lived loops, or a check interval of 0), `fresh()`
reads the version when the interval has passed, as it always did.

The number also lives in a database row per scope (`CacheVersion`), bumped with
the shared cache's copy. The refresher reads both, each in a thread of its own
(a source that does not answer is skipped, never waited for), and a move in
either empties the memos: a revocation reaches a gateway that cannot reach Redis,
or whose Redis missed the bump, within the check interval. With the database
away nothing can change (every change is a database write), so keeping the
memos is right.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.cache import cache

from .dbguard import run_guarded

CATALOG = "catalog"  # connections, LLMs, aliases, grants, group membership, departments
KEYS = "keys"  # API keys

_PREFIX = "meshgate:version:"
logger = logging.getLogger(__name__)


def bump(scope: str) -> None:
    """Move a scope's version in the database row and in the shared cache.

    Each copy alone reaches every gateway: one that is away is logged, not raised
    (this runs after the change committed)."""
    try:
        run_guarded(_bump_row, scope)
    except Exception as exc:
        logger.warning("versioning: the %s version row was not bumped (%s)", scope, _name(exc))
    key = _PREFIX + scope
    try:
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, int(time.time() * 1000), timeout=None)
    except Exception as exc:
        logger.warning("versioning: the shared cache was not bumped (%s)", _name(exc))


def _bump_row(scope: str) -> None:
    from django.db.models import F

    from .models import CacheVersion

    if not CacheVersion.objects.filter(scope=scope).update(version=F("version") + 1):
        _row, created = CacheVersion.objects.get_or_create(scope=scope, defaults={"version": 1})
        if not created:
            CacheVersion.objects.filter(scope=scope).update(version=F("version") + 1)


def _read_rows(scopes: list[str]) -> dict[str, int]:
    from .models import CacheVersion

    def read() -> dict[str, int]:
        rows = CacheVersion.objects.filter(scope__in=scopes).values_list("scope", "version")
        return dict(rows)

    found = run_guarded(read)
    return {scope: found.get(scope, 0) for scope in scopes}


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def current(scope: str) -> int:
    value = cache.get(_PREFIX + scope)
    if value is None:
        value = int(time.time() * 1000)
        cache.add(_PREFIX + scope, value, timeout=None)
        value = cache.get(_PREFIX + scope, value)
    return int(value)


class VersionedMemo:
    """A per-process dict that empties itself when the shared version moves."""

    def __init__(self, scope: str, registry: Registry | None = None) -> None:
        self.scope = scope
        self.data: dict = {}
        self._version: int | None = None
        self._checked_at = 0.0
        self.registry = registry if registry is not None else memos
        self.registry.memos.append(self)

    def fresh(self) -> dict:
        if self._version is not None and self.registry.refreshed_here():
            return self.data  # the loop's refresher keeps it current
        now = time.monotonic()
        if now - self._checked_at >= settings.MESHGATE_CACHE_CHECK_SECONDS:
            self._checked_at = now
            try:
                version = current(self.scope)
            except Exception as exc:  # the shared cache is away: keep what we have
                logger.warning("versioning: the shared cache did not answer (%s)", _name(exc))
                version = self._version if self._version is not None else 0
            self.apply(version)
        return self.data

    def apply(self, version: int) -> None:
        if version != self._version:
            self._version = version
            self.data = {}

    def clear(self) -> None:
        self.data = {}
        self._version = None
        self._checked_at = 0.0


class Registry:
    """Memos and the one background task that keeps them current on one event loop.

    The process has one (`memos`), which the memos of the gateway, quotas and the rest join when
    their modules are imported and whose refresher the gateway's lifespan starts and stops. A
    test makes its own, so its memos and its refresher are nobody else's.
    """

    def __init__(self) -> None:
        self.memos: list[VersionedMemo] = []
        self.refresher: asyncio.Task | None = None

    def forget(self, *memos: VersionedMemo) -> None:
        """Stop keeping these memos current (their owner was replaced). The list is rebound,
        not edited, so a refresher walking the old one is not disturbed."""
        self.memos = [memo for memo in self.memos if all(memo is not gone for gone in memos)]

    def refreshed_here(self) -> bool:
        task = self.refresher
        if task is None or task.done():
            return False
        try:
            return task.get_loop() is asyncio.get_running_loop()
        except RuntimeError:
            return False

    def start_refresher(self) -> None:
        """Keep these memos current from a background task on the running loop.

        Only when the shared cache is remote and the interval is above 0: with the
        local-memory cache a read costs nothing and is done in place.
        """
        if _local_cache() or settings.MESHGATE_CACHE_CHECK_SECONDS <= 0:
            return
        if self.refresher is None or self.refresher.done():
            self.refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def stop_refresher(self) -> None:
        task, self.refresher = self.refresher, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _refresh_forever(self) -> None:
        cache_source = _Source("shared cache", _read_versions)
        row_source = _Source("database", _read_rows)
        rows_seen: dict[str, int] = {}
        try:
            while True:
                scopes = sorted({memo.scope for memo in self.memos})
                from_cache, from_rows = await asyncio.gather(
                    cache_source.versions(scopes), row_source.versions(scopes)
                )
                moved: set[str] = set()
                for scope, version in (from_rows or {}).items():
                    if rows_seen.get(scope, version) != version:
                        moved.add(scope)
                    rows_seen[scope] = version
                for memo in self.memos:
                    if from_cache is not None:
                        memo.apply(from_cache[memo.scope])
                    if memo.scope in moved:
                        memo.data = {}
                await asyncio.sleep(settings.MESHGATE_CACHE_CHECK_SECONDS)
        finally:
            for source in (cache_source, row_source):
                source.executor.shutdown(wait=False, cancel_futures=True)


# The process's memos. The gateway's lifespan runs their refresher on its loop.
memos = Registry()
start_refresher = memos.start_refresher
stop_refresher = memos.stop_refresher


def _read_versions(scopes: list[str]) -> dict[str, int]:
    found = cache.get_many([_PREFIX + scope for scope in scopes])
    versions = {}
    for scope in scopes:
        value = found.get(_PREFIX + scope)
        versions[scope] = int(value) if value is not None else current(scope)
    return versions


class _Source:
    """One place versions are read from, in a thread of its own: a read that hangs (a
    frozen network) holds only its own source, and is not asked again until it ends."""

    def __init__(self, name: str, read) -> None:
        self.name = name
        self.read = read
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"versions-{name}")
        self.pending: asyncio.Future | None = None
        self.failing = False

    async def versions(self, scopes: list[str]) -> dict[str, int] | None:
        loop = asyncio.get_running_loop()
        if self.pending is None or self.pending.done():
            self.pending = loop.run_in_executor(self.executor, self.read, scopes)
        try:
            async with asyncio.timeout(max(1.0, settings.MESHGATE_CACHE_CHECK_SECONDS)):
                found = await asyncio.shield(self.pending)
        except Exception as exc:  # away or not answering: keep what we have, try again
            if not self.failing:
                logger.warning("versioning: the %s did not answer (%s)", self.name, _name(exc))
            self.failing = True
            return None
        if self.failing:
            logger.warning("versioning: the %s answers again", self.name)
        self.failing = False
        return found


def _local_cache() -> bool:
    return "locmem" in settings.CACHES["default"]["BACKEND"].lower()
