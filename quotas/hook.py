"""Admission as the gateway's pipeline calls it: from its targets and body, refusals as 429s.

`gateway.service.handle` calls `admit_call` after authorizing and before opening
the call's record, and settles the returned Admission in `_finish`, which every
exit path goes through (success, upstream error, client disconnect, our own failure),
through `settle_soon`: the answer does not wait for the settlement.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from gateway.errors import GatewayError

from . import runtime
from .admission import Admission, admit, estimate_prompt_tokens
from .errors import error_response
from .ledger import QuotaExceeded, QuotaUnavailable
from .ratelimit import RateLimited

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
    Raise GatewayError 429 (outcome budget_exceeded or rate_limited) when refused.
    """
    first = targets[0]
    prices = (
        max(t.input_price for t in targets),
        max(t.output_price for t in targets),
        max(t.cached_input_price for t in targets),
    )
    try:
        return await admit(
            principal=principal,
            llm_id=first.llm_id,
            connection_id=first.connection_id,
            prices=prices,
            prompt_tokens_estimate=estimate_prompt_tokens(body),
            max_output_tokens=_requested_output(endpoint, body),
        )
    except QuotaUnavailable:
        raise GatewayError(
            503,
            "Quotas and rate limits cannot be checked right now (their counter store is "
            "unreachable); the call was not made. Retry shortly.",
            code="quota_unavailable",
            outcome="internal_error",
            retry_after=1,
        ) from None
    except (QuotaExceeded, RateLimited) as exc:
        status, error_body, headers = error_response(exc)
        detail = error_body["error"]
        error = GatewayError(
            status,
            detail["message"],
            code=detail["code"],
            error_type=detail["type"],
            outcome="budget_exceeded" if isinstance(exc, QuotaExceeded) else "rate_limited",
            retry_after=float(headers["Retry-After"]) if "Retry-After" in headers else None,
        )
        error.extra_headers = [
            (name.lower().encode(), value.encode())
            for name, value in headers.items()
            if name != "Retry-After"  # error_reply writes retry-after itself
        ]
        raise error from None


def settle_soon(admission: Admission, cost: Decimal, tokens: int) -> None:
    """Settle from synchronous code on the event loop (the gateway's `_finish`)."""
    task = asyncio.get_running_loop().create_task(admission.settle(cost, tokens))
    runtime.current.settling.add(task)
    task.add_done_callback(_settled)


def _settled(task: asyncio.Task) -> None:
    runtime.current.settling.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("Quota settlement failed: %s", type(task.exception()).__name__)
