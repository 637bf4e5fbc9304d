"""The data `bench/audit.py` measures on: departments, users, keys, LLMs and call records.

A fixed, seeded shape (120 days to 1 November 2026, six departments of 60 users), filled into
PostgreSQL with COPY, so every run measures the same data.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
import uuid
from decimal import Decimal

DEPARTMENTS = [  # (name, cost center, share of calls)
    ("Marketing", "MKT-100", 0.30),
    ("Finance", "FIN-200", 0.22),
    ("Research", "RES-300", 0.18),
    ("Support", "SUP-400", 0.14),
    ("Legal", "LEG-500", 0.09),
    ("HR", "HR-600", 0.07),
]
CONNECTIONS = ["openai", "azure", "bedrock", "vllm"]
MODELS = ["gpt-4o", "gpt-4o-mini", "o3-mini", "claude-sonnet", "llama-3-70b", "embed-small"]
USERS_PER_DEPARTMENT = 60
DAYS = 120
END = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)  # fixed, so every run measures the same data
START = END - dt.timedelta(days=DAYS)
MONTH = (dt.date(2026, 9, 1), dt.date(2026, 9, 30))  # the month the changelist is timed on
OUTCOMES = [("ok", 200, 0.93), ("upstream_error", 502, 0.03), ("rate_limited", 429, 0.02)]
OUTCOMES += [("forbidden", 403, 0.01), ("timeout", 504, 0.01)]


def seed_catalog() -> dict:
    from django.contrib.auth.models import Group, User
    from guardian.shortcuts import assign_perm

    from connections.models import LLM, Connection, Department
    from gateway.models import ApiKey

    departments = []
    for name, code, _share in DEPARTMENTS:
        group, _ = Group.objects.get_or_create(name=name)
        department, _ = Department.objects.get_or_create(
            group=group, defaults={"cost_center": code}
        )
        departments.append(department)
    users: dict[int, list] = {}
    keys: dict[int, list] = {}
    for department in departments:
        members = []
        for i in range(USERS_PER_DEPARTMENT):
            user, created = User.objects.get_or_create(username=f"{department.cost_center}-u{i}")
            if created:
                user.groups.add(department.group)
            members.append(user)
        users[department.pk] = members
        existing = {k.owner_id: k for k in ApiKey.objects.filter(department=department)}
        missing = [
            ApiKey(
                public_id=uuid.uuid4().hex[:8],
                key_hash=uuid.uuid4().hex + uuid.uuid4().hex,
                owner=user,
                department=department,
                purpose=random.choice(["newsletter", "triage", "forecast", "contracts", "chat"]),
            )
            for user in members
            if user.pk not in existing
        ]
        ApiKey.objects.bulk_create(missing)
        keys[department.pk] = list(ApiKey.objects.filter(department=department))
    llms = []
    for slug in CONNECTIONS:
        connection, _ = Connection.objects.get_or_create(
            slug=slug,
            defaults={
                "name": slug.title(),
                "kind": "openai_compatible",
                "base_url": "https://x/v1",
            },
        )
        for model in MODELS:
            llm, _ = LLM.objects.get_or_create(
                connection=connection,
                name=model,
                defaults={
                    "approved": True,
                    "input_price": Decimal("2.5"),
                    "output_price": Decimal("10"),
                    "cached_input_price": Decimal("1.25"),
                    "kind": "embedding" if model.startswith("embed") else "chat",
                },
            )
            llms.append(llm)
    admin, created = User.objects.get_or_create(username="bench-admin")
    if created or not admin.is_superuser:
        admin.is_superuser = admin.is_staff = True
        admin.save()
    auditor, _ = User.objects.get_or_create(username="bench-auditor")
    auditor.is_staff = True
    auditor.save()
    assign_perm("connections.view_department_audit", auditor, departments[0])
    return {"departments": departments, "users": users, "keys": keys, "llms": llms}


def fill(count: int, catalog: dict) -> float:
    from django.db import connection

    from audit.models import CallRecord

    fields = [f for f in CallRecord._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    rng = random.Random(42)
    departments = catalog["departments"]
    weights = [share for *_rest, share in DEPARTMENTS]
    outcome_weights = [w for *_rest, w in OUTCOMES]
    span = (END - START).total_seconds()
    llms = catalog["llms"]
    # Rows arrive in time order, as the gateway writes them: a month's records sit together
    # on disk. (Random order makes every range read touch most of the table's pages.)
    moments = sorted(START + dt.timedelta(seconds=rng.random() * span) for _ in range(count))
    started = time.perf_counter()
    with connection.cursor() as cursor:
        copy_sql = f"COPY {CallRecord._meta.db_table} ({columns}) FROM STDIN"
        with cursor.cursor.copy(copy_sql) as copy:
            for i in range(count):
                department = rng.choices(departments, weights)[0]
                user = rng.choice(catalog["users"][department.pk])
                key = rng.choice(catalog["keys"][department.pk])
                llm = rng.choice(llms)
                outcome, status, _w = rng.choices(OUTCOMES, outcome_weights)[0]
                at = moments[i]
                latency = int(rng.lognormvariate(6.8, 0.6))
                streamed = rng.random() < 0.6
                ttft = int(latency * rng.uniform(0.1, 0.4)) if streamed else None
                prompt, completion = rng.randint(20, 4000), rng.randint(0, 1200)
                ok = outcome == "ok"
                question = f"Summarise ticket {i} for {user.username}: " + "lorem ipsum " * 20
                values = {
                    "request_id": f"req-{i:010d}-{rng.getrandbits(32):08x}",
                    "started_at": at,
                    "first_token_at": at + dt.timedelta(milliseconds=ttft) if ttft else None,
                    "ended_at": at + dt.timedelta(milliseconds=latency),
                    "latency_ms": latency,
                    "ttft_ms": ttft,
                    "user_id": user.pk,
                    "api_key_id": key.pk,
                    "api_key_prefix": key.prefix,
                    "department_id": department.pk,
                    "purpose": key.purpose,
                    "endpoint": "chat.completions",
                    "streamed": streamed,
                    "model_requested": llm.mesh_id,
                    "alias_name": "",
                    "attempts": json.dumps(
                        [{"llm": llm.mesh_id, "status": status, "latency_ms": latency}]
                    ),
                    "llm_id": llm.pk,
                    "connection_id": llm.connection_id,
                    "outcome": outcome,
                    "status_code": status,
                    "error_message": "" if ok else f"upstream answered {status}",
                    "prompt_tokens": prompt if ok else 0,
                    "completion_tokens": completion if ok else 0,
                    "cached_tokens": 0,
                    "tokens_estimated": False,
                    "cost": (Decimal(prompt * 25 + completion * 100) / 10_000_000) if ok else 0,
                    "input_price": Decimal("2.5"),
                    "output_price": Decimal("10"),
                    "cached_input_price": Decimal("1.25"),
                    "client_ip": f"10.{i % 200}.{i % 97}.{i % 251}",
                    "user_agent": "OpenAI/Python 1.99.0",
                    "request_body": json.dumps(
                        {"model": llm.mesh_id, "messages": [{"role": "user", "content": question}]}
                    ),
                    "response_body": json.dumps(
                        {"choices": [{"message": {"role": "assistant", "content": "ok " * 60}}]}
                    )
                    if ok
                    else None,
                }
                row = []
                for field in fields:
                    value = values.get(field.attname)
                    if field.attname not in values:  # a field added after this script
                        value = field.get_default()
                        if isinstance(value, (dict, list)):
                            value = json.dumps(value)
                    row.append(value)
                copy.write_row(row)
                if i and i % 200_000 == 0:
                    print(f"  {i:,} rows, {time.perf_counter() - started:.0f} s", flush=True)
    elapsed = time.perf_counter() - started
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {CallRecord._meta.db_table}")
    return elapsed
