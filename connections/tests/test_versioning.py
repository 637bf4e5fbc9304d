"""Versioned memos: a change elsewhere empties them, and the gateway's loop never waits on it."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid

import pytest
from django.core.cache import cache

from conftest import redis_url_for_tests
from connections import versioning

REDIS = os.environ.get("REDIS_URL") or redis_url_for_tests(15)


@pytest.fixture
def redis_cache(settings):
    """The shared cache on the real Redis, as in production."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS,
            "KEY_PREFIX": "versioning-test-" + uuid.uuid4().hex[:8],
        }
    }
    settings.MESHGATE_CACHE_CHECK_SECONDS = 0.1
    yield
    cache.clear()


@pytest.fixture
def registry():
    """Memos and a refresher of this test's own, not the process's."""
    return versioning.Registry()


def bump_elsewhere(scope: str) -> None:
    """Another process's admin change (a thread: the same Redis, another connection)."""
    thread = threading.Thread(target=versioning.bump, args=(scope,))
    thread.start()
    thread.join()


def test_sync_code_sees_a_bump_after_the_check_interval(redis_cache, settings, registry):
    memo = versioning.VersionedMemo("scope-" + uuid.uuid4().hex, registry)
    memo.fresh()["cached"] = True
    bump_elsewhere(memo.scope)
    settings.MESHGATE_CACHE_CHECK_SECONDS = 0
    assert memo.fresh() == {}


def test_on_the_gateways_loop_the_refresher_reads_versions_and_calls_do_not(redis_cache, registry):
    memo = versioning.VersionedMemo("scope-" + uuid.uuid4().hex, registry)

    async def scenario():
        registry.start_refresher()
        try:
            memo.fresh()["cached"] = True  # the first check reads at once
            bump_elsewhere(memo.scope)
            # Right after the change a call does not read the shared cache itself...
            assert memo.fresh() == {"cached": True}
            # ...and the refresher empties the memo within the check interval.
            for _ in range(50):
                await asyncio.sleep(0.05)
                if memo.fresh() == {}:
                    return True
            return False
        finally:
            await registry.stop_refresher()

    assert asyncio.run(scenario())


def test_the_refresher_survives_the_shared_cache_going_away(redis_cache, settings, registry):
    memo = versioning.VersionedMemo("scope-" + uuid.uuid4().hex, registry)

    async def scenario():
        registry.start_refresher()
        try:
            memo.fresh()["cached"] = True
            working = settings.CACHES
            settings.CACHES = {
                "default": {**working["default"], "LOCATION": "redis://127.0.0.1:1/0"}
            }
            await asyncio.sleep(0.35)  # a few refreshes fail: nothing listens there
            alive = not registry.refresher.done()
            settings.CACHES = working
            bump_elsewhere(memo.scope)
            for _ in range(50):
                await asyncio.sleep(0.05)
                if memo.fresh() == {}:
                    return alive, True
            return alive, False
        finally:
            await registry.stop_refresher()

    assert asyncio.run(scenario()) == (True, True)


def test_with_the_local_memory_cache_no_refresher_is_started(settings, registry):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

    async def scenario():
        registry.start_refresher()
        return registry.refresher

    assert asyncio.run(scenario()) is None


def test_a_refresher_keeps_its_own_registrys_memos_and_no_others(redis_cache, registry):
    other = versioning.Registry()
    mine = versioning.VersionedMemo("scope-" + uuid.uuid4().hex, registry)
    theirs = versioning.VersionedMemo("scope-" + uuid.uuid4().hex, other)

    async def scenario():
        registry.start_refresher()
        try:
            return registry.refreshed_here(), other.refreshed_here()
        finally:
            await registry.stop_refresher()

    assert asyncio.run(scenario()) == (True, False)
    assert registry.memos == [mine] and other.memos == [theirs]
    assert theirs not in versioning.memos.memos
