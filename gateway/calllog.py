"""One log line per call, at INFO on the `meshgate.calls` logger: an ending.

Its fields (request id, door, endpoint, model, provider, outcome, status, error code,
latency, tokens, cost, key prefix, department) ride on the record as `extra`, so
`MESHGATE_LOG_FORMAT=json` writes them as one JSON object and `text` as `name=value`
pairs. Never a body, a prompt, an answer, a key or a provider's error text (which may
quote the request): the error *code* only. Off when the logger is above INFO.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .metrics import door_of

if TYPE_CHECKING:
    from .call import Call

logger = logging.getLogger("meshgate.calls")


def log_call(call: Call) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    target = call.target or (call.targets[0] if call.targets else None)
    principal = call.principal
    usage = call.usage
    logger.info(
        "call",
        extra={
            "request_id": call.request_id,
            "door": door_of(call),
            "endpoint": call.endpoint,
            "model": target.mesh_id if target is not None else "",
            "alias": call.alias_name,
            "outcome": call.outcome.value,
            "status": call.status,
            "error_code": call.error_code,
            "latency_ms": int((time.monotonic() - call.started) * 1000),
            "attempts": len(call.attempts.items) if call.attempts is not None else 0,
            "prompt_tokens": usage.prompt_tokens if usage is not None else 0,
            "completion_tokens": usage.completion_tokens if usage is not None else 0,
            "cost_usd": str(call.cost) if call.cost is not None else "",
            "key_prefix": principal.api_key_prefix if principal is not None else "",
            "department_id": principal.department_id if principal is not None else None,
            "streamed": call.streamed,
        },
    )
