"""Call records for tests of reading the trail, created directly with bulk_create."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

from django.utils import timezone

from audit.models import CallRecord

_serial = itertools.count(1)


def record(**fields) -> CallRecord:
    """An unsaved, completed chat call; any field may be overridden."""
    n = next(_serial)
    started = fields.pop("started_at", None) or timezone.now() - dt.timedelta(minutes=n)
    latency = fields.pop("latency_ms", 800)
    values = {
        "request_id": f"req-{n:08d}",
        "started_at": started,
        "ended_at": started + dt.timedelta(milliseconds=latency or 0),
        "latency_ms": latency,
        "endpoint": "chat.completions",
        "model_requested": "sim/gpt-4o-mini",
        "outcome": CallRecord.Outcome.OK,
        "status_code": 200,
        "prompt_tokens": 12,
        "completion_tokens": 30,
        "cost": Decimal("0.0000198"),
        "request_body": {
            "model": "sim/gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
        },
        "response_body": {"choices": [{"message": {"role": "assistant", "content": "hello"}}]},
    }
    user = fields.get("user")
    if user is not None and "department" not in fields:
        group_department = getattr(user.groups.first(), "department", None)
        values["department"] = group_department
    llm = fields.get("llm")
    if llm is not None:
        values.setdefault("connection", llm.connection)
        values["model_requested"] = fields.get("model_requested", llm.mesh_id)
    values.update(fields)
    return CallRecord(**values)


def create(*records: CallRecord) -> list[CallRecord]:
    return CallRecord.objects.bulk_create(records)
