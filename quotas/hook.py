"""Admission as the gateway's pipeline calls it: from its targets and body, refusals as 429s.

`gateway.stages.admit` calls `admit_call` after authorizing, while the call's record is
being opened, and the `account` ending settles the returned Admission through `settle_soon`
on every exit path (success, upstream error, client disconnect, our own failure): the answer
does not wait for the settlement.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from . import runtime
from .admission import Admission, admit, estimate_prompt_tokens

logger = logging.getLogger(__name__)


def _requested_output(endpoint: str, body: dict[str, Any]) -> int | None:
    if endpoint in ("embeddings", "classifications"):
        return 0
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None  # the LLM's own limit bounds the answer


async def admit_call(principal, targets: list, body: dict[str, Any], endpoint: str) -> Admission:
    """Admit a call that may go to any of `targets` (the first, then fallbacks).

    Quotas and rate limits match on the first target; the worst case is priced at
    the dearest target's prices, so a fallback cannot cost more than was reserved.
    Refused: QuotaExceeded or RateLimited; QuotaUnavailable when the counter store is away,
    DatabaseUnavailable when the database is (the gateway answers each in its own words).
    """
    first = targets[0]
    prices = (
        max(t.input_price for t in targets),
        max(t.output_price for t in targets),
        max(t.cached_input_price for t in targets),
    )
    return await admit(
        principal=principal,
        llm_id=first.llm_id,
        connection_id=first.connection_id,
        prices=prices,
        prompt_tokens_estimate=estimate_prompt_tokens(body),
        max_output_tokens=_requested_output(endpoint, body),
    )


def settle_soon(admission: Admission, cost: Decimal, tokens: int) -> None:
    """Settle from synchronous code on the event loop (the gateway's `_finish`)."""
    task = asyncio.get_running_loop().create_task(admission.settle(cost, tokens))
    runtime.current.settling.add(task)
    task.add_done_callback(_settled)


def _settled(task: asyncio.Task) -> None:
    runtime.current.settling.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("Quota settlement failed: %s", type(task.exception()).__name__)
