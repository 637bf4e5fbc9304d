"""What one gateway process holds in memory beyond the database, in one object made at startup.

`GatewayConfig.ready()` calls `start()`. The object owns the caches of the hot path: the
API keys' principals (`auth`), the catalog snapshot and users' grants (`directory`), and
the provider adapters, one per connection, with their pooled HTTP clients (`clients`).
Those modules read `runtime.current` at each call (a module attribute, then a field: no
allocation, no lock), so replacing the object replaces the process's state.

The memos stay current as before: they belong to `connections.versioning`'s registry,
whose signals and refresher empty them when an admin changes a key or the catalog. A test
gets a fresh object from the `gateway_runtime` fixture (conftest.py), which calls
`start()` before it and closes the test's adapters after it.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass, field

from connections import versioning
from connections.providers.base import Adapter

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class GatewayRuntime:
    registry: versioning.Registry = field(default_factory=lambda: versioning.memos)
    # auth: principals (and misses) by key hash; when each key's use was last noted.
    keys: versioning.VersionedMemo = field(init=False)
    touched: dict[int, float] = field(default_factory=dict)
    # directory: {"snapshot": Snapshot}, kept until the catalog's version moves; one loading
    # lock per event loop (tests run several loops; production one per worker).
    catalog: versioning.VersionedMemo = field(init=False)
    catalog_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    # clients: the adapter of each connection id; replaced ones close after a grace period,
    # their closing tasks held here (the loop keeps only weak references to tasks).
    adapters: dict[int, Adapter] = field(default_factory=dict)
    closing: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.keys = versioning.VersionedMemo(versioning.KEYS, self.registry)
        self.catalog = versioning.VersionedMemo(versioning.CATALOG, self.registry)

    def leave(self) -> None:
        """Take this object's memos out of the registry (it is replaced by a fresh one)."""
        self.registry.forget(self.keys, self.catalog)

    async def close(self) -> None:
        """Close every adapter (process shutdown; the end of a test)."""
        adapters = list(self.adapters.values())
        self.adapters.clear()
        for task in list(self.closing):
            task.cancel()
        for adapter in adapters:
            await close_adapter(adapter)


async def close_adapter(adapter: Adapter) -> None:
    try:
        await adapter.aclose()
    except Exception:
        logger.warning("closing a %s adapter failed", adapter.kind, exc_info=False)


current = GatewayRuntime()


def start() -> GatewayRuntime:
    """A new process's state (startup; a test that wants a fresh process). The previous
    object's memos leave the registry; closing its adapters is its owner's business."""
    global current
    previous, current = current, GatewayRuntime()
    previous.leave()
    return current
