"""The gateway's Prometheus metrics, and `observe`: the ending that records a call in them.

Names follow the OpenTelemetry GenAI semantic conventions where they have one
(`gen_ai_server_request_duration_seconds`, `gen_ai_server_time_to_first_token_seconds`,
`gen_ai_client_operation_duration_seconds` per upstream attempt, `gen_ai_client_token_usage`),
Meshgate's own otherwise. Labels are bounded: an operation is one of the door's endpoints,
a model is the catalog's mesh id of the target (never the client's string), a provider is
a connection kind, a department its id (`meshgate_department_info` gives its name and cost
center), never a user or a request. The mechanism (lock-free recording, several workers
merged at scrape time) is `meshsite.lib.metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric

from audit.outcome import Outcome
from audit.writer import writer
from meshsite.lib.metrics import REGISTRY

from .doors import ENDPOINTS

if TYPE_CHECKING:
    from .call import Call

# The OpenTelemetry GenAI conventions' buckets.
DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)

DOOR = "openai"  # the OpenAI door; another door is labelled by its name


def door_of(call: Call) -> str:
    """The door a call came through: "openai", or another door's name (bounded: a few)."""
    door = call.door
    return door.name if door is not None else DOOR


OPERATIONS = {"chat.completions": "chat", "embeddings": "embeddings"}
OPERATION = {endpoint: OPERATIONS.get(endpoint, endpoint) for endpoint in ENDPOINTS}
REFUSALS = {
    Outcome.BUDGET_EXCEEDED: "quota_exceeded",
    Outcome.RATE_LIMITED: "rate_limited",
}

REQUESTS = REGISTRY.counter(
    "meshgate_requests",
    "Calls to /v1/ by how they ended.",
    ("door", "operation", "model", "provider", "department", "outcome", "status"),
)
DURATION = REGISTRY.histogram(
    "gen_ai_server_request_duration_seconds",
    "Calls, from the request's arrival to the end of its answer.",
    ("door", "operation", "model", "provider", "outcome"),
    DURATION_BUCKETS,
)
FIRST_TOKEN = REGISTRY.histogram(
    "gen_ai_server_time_to_first_token_seconds",
    "Streamed calls, from the request's arrival to the first chunk of answer.",
    ("operation", "model", "provider"),
    TTFT_BUCKETS,
)
UPSTREAM = REGISTRY.histogram(
    "gen_ai_client_operation_duration_seconds",
    "Upstream attempts, by the provider's status (499: the client left; 0: never answered).",
    ("operation", "model", "provider", "status"),
    DURATION_BUCKETS,
)
TOKEN_USAGE = REGISTRY.histogram(
    "gen_ai_client_token_usage",
    "Tokens per call, input and output.",
    ("operation", "model", "provider", "token_type"),
    TOKEN_BUCKETS,
)
TOKENS = REGISTRY.counter(
    "meshgate_tokens",
    "Tokens, input and output, by department.",
    ("model", "provider", "department", "token_type"),
)
COST = REGISTRY.counter(
    "meshgate_cost_usd",
    "What calls cost, in USD, by department.",
    ("model", "provider", "department"),
)
REFUSED = REGISTRY.counter(
    "meshgate_quota_refusals",
    "Calls refused by a quota (quota_exceeded), a rate limit (rate_limited), or because their "
    "counters could not be reached (quota_unavailable).",
    ("reason", "department"),
)


def _audit_depth() -> dict[tuple[str, ...], float]:
    _usable, depths = writer.health()
    return {(where,): float(depth) for where, depth in depths.items()}


REGISTRY.gauge(
    "meshgate_audit_queue_depth",
    "Audit writes waiting: in the writer thread's queue, on the loop writer, in the spool.",
    ("queue",),
    _audit_depth,
)


def observe(call: Call) -> None:
    """Record one call that ended (an ending, and the one step of a refusal before its
    record): a few dictionary updates."""
    target = call.target or (call.targets[0] if call.targets else None)
    operation = OPERATION.get(call.endpoint, "other")
    if target is not None:
        model = target.mesh_id
        config = call.snapshot.connections.get(target.connection_id) if call.snapshot else None
        provider = config.kind if config is not None else ""
    else:
        model = provider = ""
    principal = call.principal
    department = (
        str(principal.department_id)
        if principal is not None and principal.department_id is not None
        else ""
    )
    outcome = call.outcome.value
    door = door_of(call)
    REQUESTS.inc((door, operation, model, provider, department, outcome, str(call.status)))
    DURATION.observe((door, operation, model, provider, outcome), time.monotonic() - call.started)
    if call.first_token_at is not None:
        FIRST_TOKEN.observe(
            (operation, model, provider), (call.first_token_at - call.started_at).total_seconds()
        )
    attempts = call.attempts
    if attempts is not None and attempts.items:
        for item in attempts.items:
            UPSTREAM.observe(
                (operation, item["llm"], provider, str(item["status"])), item["latency_ms"] / 1000
            )
    usage = call.usage
    if usage is not None:
        prompt, completion = usage.prompt_tokens or 0, usage.completion_tokens or 0
        TOKEN_USAGE.observe((operation, model, provider, "input"), prompt)
        TOKENS.inc((model, provider, department, "input"), prompt)
        if completion or operation == "chat":
            TOKEN_USAGE.observe((operation, model, provider, "output"), completion)
            TOKENS.inc((model, provider, department, "output"), completion)
    if call.cost:
        COST.inc((model, provider, department), float(call.cost))
    # Quotas refuse before anything goes upstream; a provider's own 429 is an attempt.
    if attempts is None or not attempts.items:
        reason = REFUSALS.get(call.outcome)
        if reason is None and call.error_code == "quota_unavailable":
            reason = "quota_unavailable"
        if reason is not None:
            REFUSED.inc((reason, department))


# (id, name, cost center) of every department, refreshed by a scrape (`load_departments`).
DEPARTMENTS: list[tuple[str, str, str]] = []


def load_departments() -> None:
    """Read the departments (sync: a scrape runs it in the database thread)."""
    from connections.models import Department

    rows = Department.objects.values_list("pk", "group__name", "cost_center")
    DEPARTMENTS[:] = [(str(pk), name, code) for pk, name, code in rows]


def _departments() -> Iterable[Metric]:
    """`meshgate_department_info{department, name, cost_center} 1`, so dashboards show names
    while calls record ids."""
    family = GaugeMetricFamily(
        "meshgate_department_info",
        "Departments by id, for joins on the department label.",
        labels=["department", "name", "cost_center"],
    )
    for row in DEPARTMENTS:
        family.add_metric(list(row), 1)
    return [family]


REGISTRY.extra.append(_departments)
