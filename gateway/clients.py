"""Provider adapters, one per connection and version, reused across calls.

An adapter owns a pooled HTTP client: building one per call would throw away
keep-alive connections and TLS sessions. When a connection changes (its version
moves, or its settings or secrets differ), the new adapter replaces the old one,
which is closed in the background once calls in flight have had time to finish.
The adapters live in the process's `GatewayRuntime` (`gateway/runtime.py`), which closes
them at shutdown.
"""

from __future__ import annotations

import asyncio

from connections.providers import build_adapter
from connections.providers.base import Adapter, ConnectionConfig

from . import runtime

_GRACE_SECONDS = 120.0


def adapter_for(config: ConnectionConfig) -> Adapter:
    adapters = runtime.current.adapters
    adapter = adapters.get(config.id)
    if adapter is not None:
        if adapter.config is config:
            return adapter
        if adapter.config.version == config.version and adapter.config == config:
            return adapter
        _retire(adapter)
    adapter = build_adapter(config)
    adapters[config.id] = adapter
    return adapter


def _retire(adapter: Adapter) -> None:
    async def close_later() -> None:
        await asyncio.sleep(_GRACE_SECONDS)
        await runtime.close_adapter(adapter)

    try:
        task = asyncio.get_running_loop().create_task(close_later())
    except RuntimeError:
        return
    closing = runtime.current.closing
    closing.add(task)
    task.add_done_callback(closing.discard)
