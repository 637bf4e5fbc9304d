"""Retries and fallback across a call's targets.

Each target gets its connection's `max_retries` extra attempts on retryable
failures (connect errors, timeouts, 429, 5xx), with jittered exponential backoff,
or the provider's `Retry-After` when it gives one; then the next target is tried.
A call waits at most `RETRY_WAIT_BUDGET` seconds in all: a `Retry-After` longer than
what is left of it is not waited out (nor shortened, which would only be refused
again) but ends the target's turn at once, so the next target is tried or the
client gets the 429 straight away, with the provider's `Retry-After`. A failure that
is not retryable (a 400, a 401 from the provider) stops at once: another target
would most likely refuse the same request. Streams fall back only before their
first byte, which `open_stream` guarantees by raising before returning.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from connections.providers.base import Adapter, ProviderError

from . import clients
from .directory import Snapshot, Target

BACKOFF_BASE = 0.25
BACKOFF_CAP = 4.0
RETRY_WAIT_BUDGET = 10.0


@dataclass
class Attempts:
    """Every attempt of one call, as the CallRecord stores them."""

    items: list[dict[str, Any]] = field(default_factory=list)
    waited: float = 0.0  # seconds spent waiting between attempts, against RETRY_WAIT_BUDGET
    # The target whose attempt a client's hang-up cut (it was called: the call is billed).
    cut: Target | None = None
    started: list[float] = field(default_factory=list)  # each attempt's (monotonic), for traces

    def add(
        self,
        target: Target,
        status: int,
        started: float,
        error: str = "",
        *,
        cause: str = "",
        unverified: bool = False,
    ) -> None:
        self.started.append(started)
        item = {
            "llm": target.mesh_id,
            "llm_id": target.llm_id,
            "connection": target.connection_slug,
            "connection_id": target.connection_id,
            "status": status,
            "latency_ms": int((time.monotonic() - started) * 1000),
        }
        if error:
            item["error"] = error
        if cause:  # a connection failure's class: "dns", "tls: unknown CA", ...
            item["cause"] = cause
        if unverified:  # the connection does not verify the provider's certificate
            item["tls_verified"] = False
        self.items.append(item)


def backoff(attempt: int, retry_after: float | None, remaining: float) -> float | None:
    """Seconds to wait before the next attempt, or None: not worth waiting within `remaining`."""
    if retry_after is not None and retry_after >= 0:
        return retry_after if retry_after <= remaining else None
    # Full jitter: concurrent callers retrying the same provider do not stampede together.
    return min(remaining, random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))


async def _attempt(
    snap: Snapshot,
    targets: list[Target],
    body: dict[str, Any],
    attempts: Attempts,
    call: Callable[[Adapter, str, dict[str, Any]], Awaitable[Any]],
) -> tuple[Target, Any]:
    last_error: ProviderError | None = None
    for target in targets:
        config = snap.connections.get(target.connection_id)
        if config is None:
            continue
        adapter = clients.adapter_for(config)
        tries = 1 + max(0, config.max_retries)
        unverified = not config.verify_tls
        for attempt in range(tries):
            started = time.monotonic()
            try:
                result = await call(adapter, target.name, body)
            except ProviderError as exc:
                attempts.add(
                    target,
                    exc.status,
                    started,
                    exc.code or "upstream_error",
                    cause=exc.cause,
                    unverified=unverified,
                )
                last_error = exc
                if not exc.retryable:
                    raise
                if exc.code == "upstream_address_refused":  # the same again: next target
                    break
                if attempt + 1 < tries:
                    wait = backoff(attempt, exc.retry_after, RETRY_WAIT_BUDGET - attempts.waited)
                    if wait is None:  # asked to wait longer than the call may: next target
                        break
                    attempts.waited += wait
                    await asyncio.sleep(wait)
                continue
            except asyncio.CancelledError:
                # The client hung up while this target was answering.
                attempts.add(target, 499, started, "client_disconnected", unverified=unverified)
                attempts.cut = target
                raise
            except Exception:
                # Our own failure or an adapter bug: recorded as an attempt, then a 500.
                attempts.add(target, 500, started, "internal_error")
                raise
            attempts.add(target, 200, started, unverified=unverified)
            return target, result
    if last_error is None:
        last_error = ProviderError(
            "No provider could take the call.", status=503, code="no_usable_connection"
        )
    raise last_error


async def complete(
    snap: Snapshot, targets: list[Target], endpoint: str, body: dict[str, Any], attempts: Attempts
) -> tuple[Target, Any]:
    """(the target that answered, its Result) or the last ProviderError."""
    if endpoint == "embeddings":
        return await _attempt(snap, targets, body, attempts, _embed)
    if endpoint in _TASKS:
        return await _attempt(snap, targets, body, attempts, _TASKS[endpoint])
    return await _attempt(snap, targets, body, attempts, _chat)


async def open_stream(
    snap: Snapshot, targets: list[Target], body: dict[str, Any], attempts: Attempts
) -> tuple[Target, Any]:
    """(the target that answered, its open Stream) or the last ProviderError."""
    return await _attempt(snap, targets, body, attempts, _stream)


async def _chat(adapter: Adapter, model: str, body: dict[str, Any]) -> Any:
    return await adapter.chat(model, body)


async def _embed(adapter: Adapter, model: str, body: dict[str, Any]) -> Any:
    return await adapter.embed(model, body)


async def _stream(adapter: Adapter, model: str, body: dict[str, Any]) -> Any:
    return await adapter.open_stream(model, body)


async def _classify(adapter: Adapter, model: str, body: dict[str, Any]) -> Any:
    return await adapter.classify(model, body)


async def _summarize(adapter: Adapter, model: str, body: dict[str, Any]) -> Any:
    return await adapter.summarize(model, body)


_TASKS = {"classifications": _classify, "summaries": _summarize}
