"""A month of generated call records for roll-up and chargeback tests, inserted with
bulk_create: spread over departments, users, LLMs, purposes and keys, with records on both sides
of each month boundary to the millisecond."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

from audit.models import CallRecord

MONTH = dt.date(2026, 10, 1)
UTC = dt.UTC

# Exactly on either side of the month's edges.
FIRST_INSTANT = dt.datetime(2026, 10, 1, 0, 0, 0, tzinfo=UTC)
LAST_INSTANT = dt.datetime(2026, 10, 31, 23, 59, 59, 999000, tzinfo=UTC)
NEXT_MONTH_FIRST = dt.datetime(2026, 11, 1, 0, 0, 0, tzinfo=UTC)
PREVIOUS_MONTH_LAST = dt.datetime(2026, 9, 30, 23, 59, 59, 999000, tzinfo=UTC)


def _cost(rng: random.Random) -> Decimal:
    # Ten decimal places, as CallRecord stores them: sub-cent amounts must add up exactly.
    return Decimal(rng.randrange(1, 5_000_000_000)) / Decimal(10**10)


def generate_month(cast, *, count: int = 600, seed: int = 7) -> list[CallRecord]:
    """`count` records in October 2026 plus eight at the edges; returns them unsaved."""
    rng = random.Random(seed)
    senders = [
        # (user, department, purpose, key prefix)
        (cast.alice, cast.marketing, "campaign copy", "mg-alice01"),
        (cast.alice, cast.marketing, "=SUM(A1:A9)", "mg-alice02"),
        (cast.bob, cast.finance, "invoice triage", "mg-bob0001"),
        (cast.bob, cast.finance, "", ""),  # playground: no key, no purpose
        (cast.charlie, cast.research, "literature review", "mg-charl01"),
        (cast.admin, cast.research, "evaluation", "mg-admin01"),
    ]
    llms = [cast.gpt4o, cast.gpt4o_mini, cast.embedding]
    outcomes = ["ok"] * 8 + ["upstream_error", "timeout"]
    records = []

    def make(started: dt.datetime, sender=None, **fields) -> CallRecord:
        user, department, purpose, prefix = sender or rng.choice(senders)
        llm = rng.choice(llms)
        values = {
            "request_id": f"gen-{seed}-{len(records):07d}",
            "started_at": started,
            "ended_at": started + dt.timedelta(milliseconds=300),
            "latency_ms": 300,
            "user": user,
            "department": department,
            "purpose": purpose,
            "api_key_prefix": prefix,
            "endpoint": "chat.completions",
            "model_requested": llm.mesh_id,
            "llm": llm,
            "connection": llm.connection,
            "outcome": rng.choice(outcomes),
            "status_code": 200,
            "prompt_tokens": rng.randrange(1, 4000),
            "completion_tokens": rng.randrange(0, 2000),
            "cached_tokens": rng.choice([0, 0, 128, 1024]),
            "cost": _cost(rng),
        }
        values.update(fields)
        record = CallRecord(**values)
        records.append(record)
        return record

    span = (NEXT_MONTH_FIRST - FIRST_INSTANT).total_seconds()
    for _ in range(count):
        make(FIRST_INSTANT + dt.timedelta(seconds=rng.uniform(0, span - 1)))
    # Month edges: in, in, out, out.
    make(FIRST_INSTANT, senders[0])
    make(LAST_INSTANT, senders[2])
    make(NEXT_MONTH_FIRST, senders[2])
    make(PREVIOUS_MONTH_LAST, senders[0])
    # Refused before authentication: no user, no department, no LLM, no cost.
    for started in (FIRST_INSTANT, LAST_INSTANT, NEXT_MONTH_FIRST):
        make(
            started,
            (None, None, "", ""),
            llm=None,
            connection=None,
            model_requested="sim/gpt-4o",
            outcome="unauthorized",
            status_code=401,
            prompt_tokens=0,
            completion_tokens=0,
            cached_tokens=0,
            cost=Decimal("0"),
        )
    return records


def cents(value) -> Decimal:
    return Decimal(value).quantize(Decimal("0.01"))
