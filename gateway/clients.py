"""Provider adapters, one per connection and version, reused across calls.

An adapter owns a pooled HTTP client: building one per call would throw away
keep-alive connections and TLS sessions. When a connection changes (its version
moves, or its settings or secrets differ), the new adapter replaces the old one,
which is closed in the background once calls in flight have had time to finish.
"""

from __future__ import annotations

import asyncio
import logging

from connections.providers import build_adapter
from connections.providers.base import Adapter, ConnectionConfig

logger = logging.getLogger(__name__)

_GRACE_SECONDS = 120.0

_adapters: dict[int, Adapter] = {}
_closing: set[asyncio.Task] = set()


def adapter_for(config: ConnectionConfig) -> Adapter:
    adapter = _adapters.get(config.id)
    if adapter is not None:
        if adapter.config is config:
            return adapter
        if adapter.config.version == config.version and adapter.config == config:
            return adapter
        _retire(adapter)
    adapter = build_adapter(config)
    _adapters[config.id] = adapter
    return adapter


def _retire(adapter: Adapter) -> None:
    async def close_later() -> None:
        await asyncio.sleep(_GRACE_SECONDS)
        await _close(adapter)

    try:
        task = asyncio.get_running_loop().create_task(close_later())
    except RuntimeError:
        return
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _close(adapter: Adapter) -> None:
    try:
        await adapter.aclose()
    except Exception:
        logger.warning("closing a %s adapter failed", adapter.kind, exc_info=False)


async def close_all() -> None:
    """Close every adapter (process shutdown)."""
    adapters = list(_adapters.values())
    _adapters.clear()
    for task in list(_closing):
        task.cancel()
    for adapter in adapters:
        await _close(adapter)
