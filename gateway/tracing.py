"""A call as an OpenTelemetry trace: stages and an ending, registered only when tracing is on.

`begin` (the first stage) opens the call's SERVER span, a child of the client's W3C
`traceparent` when it sent one, and makes that span the parent of every upstream request
(`connections.providers.context.UPSTREAM_HEADERS`), so the trace runs on into the provider.
`opened`, `admitted` and `written` note when the record was queued, when quotas admitted
the call and when its record was written; `end` (an ending, and the one step of a refusal
before its record) closes the call's span with the GenAI attributes and adds its children
from what the call noted: `admission`, `audit write` and one CLIENT span per upstream
attempt (from the router's attempts). Without OTEL_EXPORTER_OTLP_ENDPOINT none of this is
registered: no cost at all.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from connections.providers.context import UPSTREAM_HEADERS
from meshsite.lib import tracing

from .metrics import OPERATION

if TYPE_CHECKING:
    from .call import Call

logger = logging.getLogger(__name__)
PROPAGATOR = TraceContextTextMapPropagator()
_tracer: trace.Tracer | None = None


class CallTrace:
    """What a traced call notes on its way (monotonic times), and its open span."""

    __slots__ = ("admitted", "context", "opened", "span", "written")

    def __init__(self, span: trace.Span, context: Any) -> None:
        self.span, self.context = span, context
        self.opened = self.admitted = self.written = 0.0


def _get_tracer() -> trace.Tracer:
    global _tracer
    if _tracer is None:
        _tracer = tracing.tracer("meshgate.gateway")
    return _tracer


def _ns(call: Call, monotonic: float) -> int:
    """A monotonic time of this call as the wall-clock nanoseconds a span takes."""
    return int((call.started_at.timestamp() + (monotonic - call.started)) * 1e9)


async def begin(call: Call) -> None:
    """Open the call's span (child of the client's traceparent) and pass it upstream."""
    carrier = {"traceparent": call.traceparent.decode("latin-1")} if call.traceparent else {}
    parent = PROPAGATOR.extract(carrier)
    operation = OPERATION.get(call.endpoint, call.endpoint)
    span = _get_tracer().start_span(
        f"{operation} {call.model_requested}".strip(),
        context=parent,
        kind=SpanKind.SERVER,
        start_time=_ns(call, call.started),
        attributes={"gen_ai.operation.name": operation, "meshgate.request_id": call.request_id},
    )
    context = trace.set_span_in_context(span, parent)
    call.trace = CallTrace(span, context)
    ctx = span.get_span_context()
    traceparent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
    UPSTREAM_HEADERS.set(b"traceparent: %s\r\n" % traceparent.encode())


async def opened(call: Call) -> None:
    if call.trace is not None:
        call.trace.opened = time.monotonic()


async def admitted(call: Call) -> None:
    if call.trace is not None:
        call.trace.admitted = time.monotonic()


async def written(call: Call) -> None:
    if call.trace is not None:
        call.trace.written = time.monotonic()


def end(call: Call) -> None:
    """Close the call's span and add its children. Never raises: a trace is not the call."""
    noted: CallTrace | None = call.trace
    if noted is None:
        return
    call.trace = None
    try:
        _end(call, noted)
    except Exception as exc:
        logger.warning("tracing: the span of %s failed: %s", call.request_id, type(exc).__name__)


def _end(call: Call, noted: CallTrace) -> None:
    span, context, ending = noted.span, noted.context, time.monotonic()
    tracer = _get_tracer()
    operation = OPERATION.get(call.endpoint, call.endpoint)
    if noted.opened:
        _child(
            tracer,
            context,
            "admission",
            _ns(call, noted.opened),
            _ns(call, noted.admitted or ending),
            ok=bool(noted.admitted),
        )
        _child(
            tracer,
            context,
            "audit write",
            _ns(call, noted.opened),
            _ns(call, noted.written or ending),
            ok=bool(noted.written),
        )
    attempts = call.attempts
    if attempts is not None:
        for item, started in zip(attempts.items, attempts.started, strict=False):
            status = item["status"]
            attempt = tracer.start_span(
                f"{operation} {item['llm']}",
                context=context,
                kind=SpanKind.CLIENT,
                start_time=_ns(call, started),
                attributes={
                    "gen_ai.operation.name": operation,
                    "gen_ai.request.model": item["llm"],
                    "meshgate.connection": item["connection"],
                    "http.response.status_code": status,
                },
            )
            if status >= 400 or status == 0:
                attempt.set_status(Status(StatusCode.ERROR))
                attempt.set_attribute("error.type", item.get("error") or str(status))
            attempt.end(end_time=_ns(call, started) + item["latency_ms"] * 1_000_000)
    target = call.target or (call.targets[0] if call.targets else None)
    attributes: dict[str, Any] = {
        "gen_ai.request.model": call.model_requested,
        "meshgate.outcome": call.outcome.value,
        "http.response.status_code": call.status,
    }
    if target is not None:
        attributes["gen_ai.response.model"] = target.mesh_id
        config = call.snapshot.connections.get(target.connection_id) if call.snapshot else None
        if config is not None:
            attributes["gen_ai.provider.name"] = config.kind
    if call.usage is not None:
        attributes["gen_ai.usage.input_tokens"] = call.usage.prompt_tokens or 0
        attributes["gen_ai.usage.output_tokens"] = call.usage.completion_tokens or 0
    if call.cost is not None:
        attributes["meshgate.cost_usd"] = float(call.cost)
    if call.principal is not None and call.principal.department_id is not None:
        attributes["meshgate.department_id"] = call.principal.department_id
    if call.status >= 400 or call.status == 0:
        attributes["error.type"] = call.error_code or call.outcome.value
        span.set_status(Status(StatusCode.ERROR))
    span.set_attributes(attributes)
    span.end(end_time=_ns(call, ending))


def _child(
    tracer: trace.Tracer, context: Any, name: str, start: int, stop: int, *, ok: bool
) -> None:
    child = tracer.start_span(name, context=context, start_time=start)
    if not ok:
        child.set_status(Status(StatusCode.ERROR))
    child.end(end_time=stop)
