"""The user's recent playground runs, read back from the audit trail.

A run is one CallRecord with purpose "playground" made by the user (a
comparison of three models is three runs). Only the user's own records are
ever read here, and only what the page needs to reopen one.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async

from audit.models import CallRecord
from audit.money import usd

PURPOSE = "playground"
RECENT_LIMIT = 20


def _own_runs(user):
    return CallRecord.objects.filter(user=user, purpose=PURPOSE)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _answer_text(response_body: Any) -> str:
    """The assistant's text from a stored response, whichever shape the gateway kept."""
    if not isinstance(response_body, dict):
        return ""
    choices = response_body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        message = choices[0].get("message") or choices[0].get("delta") or {}
    else:
        message = response_body
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def summary(record: CallRecord) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "started_at": record.started_at.isoformat(),
        "model": record.model_requested,
        "served_by": record.llm.mesh_id if record.llm_id and record.llm else "",
        "department": record.department.name if record.department_id else "",
        "outcome": record.outcome,
        "outcome_label": record.get_outcome_display(),
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cost": _money(record.cost),
        "cost_display": usd(record.cost),
        "latency_ms": record.latency_ms,
        "ttft_ms": record.ttft_ms,
    }


def detail(record: CallRecord) -> dict[str, Any]:
    request = record.request_body if isinstance(record.request_body, dict) else {}
    messages = [
        {"role": m["role"], "content": m["content"]}
        for m in request.get("messages") or []
        if isinstance(m, dict) and isinstance(m.get("content"), str)
    ]
    return {
        **summary(record),
        "messages": messages,
        "answer": _answer_text(record.response_body),
        "settings": {
            name: request.get(name)
            for name in ("temperature", "max_tokens", "top_p")
            if request.get(name) is not None
        },
        "bodies_kept": bool(messages),
    }


def recent_runs(user, *, limit: int = RECENT_LIMIT) -> list[dict[str, Any]]:
    records = _own_runs(user).select_related("llm", "department").order_by("-started_at")
    return [summary(record) for record in records[:limit]]


def run_detail(user, request_id: str) -> dict[str, Any] | None:
    record = _own_runs(user).select_related("llm", "department").filter(request_id=request_id)
    found = record.first()
    return detail(found) if found else None


arecent_runs = sync_to_async(recent_runs)
arun_detail = sync_to_async(run_detail)
