"""The gateway freezes what startup loaded out of the garbage collector and collects the young
generation less often (MESHGATE_GC_FREEZE): full collections over every long-lived object
stalled the loop mid-call and made p99 several times p50 (docs/PERFORMANCE.md, 6 December)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from gateway.asgi import GatewayApp

pytestmark = pytest.mark.django_db(transaction=True)


def run_lifespan() -> tuple[int, int]:
    """Start the gateway app's lifespan, note the collector's state, shut it down."""

    async def exchange() -> tuple[int, int]:
        inbox: asyncio.Queue = asyncio.Queue()
        outbox: asyncio.Queue = asyncio.Queue()
        task = asyncio.create_task(GatewayApp()({"type": "lifespan"}, inbox.get, outbox.put))
        await inbox.put({"type": "lifespan.startup"})
        assert (await outbox.get())["type"] == "lifespan.startup.complete"
        state = gc.get_freeze_count(), gc.get_threshold()[0]
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task
        return state

    threshold = gc.get_threshold()
    try:
        return asyncio.run(exchange())
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_startup_freezes_what_it_loaded_and_raises_the_young_threshold(cast, settings):
    settings.MESHGATE_GC_FREEZE = True
    settings.MESHGATE_GC_THRESHOLD = 40_000
    frozen, threshold = run_lifespan()
    assert frozen > 10_000  # Django, the directory and the adapters: many thousands of objects
    assert threshold == 40_000


def test_it_can_be_turned_off(cast, settings):
    settings.MESHGATE_GC_FREEZE = False
    before = gc.get_threshold()[0]
    frozen, threshold = run_lifespan()
    assert frozen == 0
    assert threshold == before
