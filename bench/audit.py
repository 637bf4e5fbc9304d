"""Audit trail at scale: 1,000,000 call records in PostgreSQL, then what reading them costs.

    .venv/bin/python bench/audit.py                 # fill (once) and measure
    .venv/bin/python bench/audit.py --refill        # start again from an empty table
    .venv/bin/python bench/audit.py --purge         # also time the retention purge

Uses its own database (`bench_audit` on BENCH_AUDIT_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/bench_audit), created and migrated here, filled with
COPY. It times, through Django's test Client: the admin changelist for one department and
one month (as a superuser and as that department's auditor), the unfiltered changelist,
/api/calls/, and the CSV export of that filter and of everything, each export in a fresh
process streamed to /dev/null with its peak RSS. Figures go to stdout (and --json FILE).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_audit"
DATABASE_URL = os.environ.get("BENCH_AUDIT_DATABASE_URL", DEFAULT_URL)

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


def _setup_django() -> None:
    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ.pop("REDIS_URL", None)  # locmem cache, eager tasks: nothing shared with others
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshsite.settings")
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # so test Client responses carry their template context


def ensure_database() -> None:
    import psycopg

    parts = urlsplit(DATABASE_URL)
    name = parts.path.lstrip("/")
    admin_url = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


# --- filling ---------------------------------------------------------------------------------


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


# --- measuring -------------------------------------------------------------------------------


def timed(fn, repeat: int) -> dict:
    times = []
    result = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1)}, result


def measure_pages(catalog: dict, repeat: int) -> dict:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    department = catalog["departments"][0]
    month = {"started_from": MONTH[0].isoformat(), "started_to": MONTH[1].isoformat()}
    superuser, auditor = Client(), Client()
    superuser.force_login(User.objects.get(username="bench-admin"))
    auditor.force_login(User.objects.get(username="bench-auditor"))
    changelist = "/admin/audit/callrecord/"
    from audit.models import CallRecord

    in_month = CallRecord.objects.filter(
        department=department,
        started_at__gte=dt.datetime.combine(MONTH[0], dt.time.min, dt.UTC),
        started_at__lt=dt.datetime.combine(MONTH[1], dt.time.min, dt.UTC) + dt.timedelta(days=1),
    ).count()
    deep_page = max(1, min(100, in_month // 50))
    detail_pk, request_id = CallRecord.objects.filter(department=department).values_list(
        "pk", "request_id"
    )[0]
    cases = {
        "changelist, one department, one month (superuser)": (
            superuser,
            changelist,
            {"department": department.pk, **month},
        ),
        "changelist, one department, one month, date hierarchy (superuser)": (
            superuser,
            changelist,
            {"department": department.pk, "started_at__year": 2026, "started_at__month": 9},
        ),
        "changelist, one month (department auditor)": (auditor, changelist, month),
        "changelist, everything (department auditor)": (auditor, changelist, {}),
        "changelist, everything (superuser)": (superuser, changelist, {}),
        f"changelist, page {deep_page} of one department and month (superuser)": (
            superuser,
            changelist,
            {"department": department.pk, **month, "p": deep_page},
        ),
        "search by request id (superuser)": (superuser, changelist, {"q": request_id}),
        "record detail page (superuser)": (superuser, None, {}),
        "/api/calls/ one month, 100 rows (department auditor)": (
            auditor,
            "/api/calls/",
            {"started_after": MONTH[0].isoformat(), "started_before": "2026-10-01"},
        ),
    }
    results = {}
    for name, (client, url, params) in cases.items():
        url = url or f"/admin/audit/callrecord/{detail_pk}/change/"

        def get(client=client, url=url, params=params):
            response = client.get(url, params)
            assert response.status_code == 200, (url, response.status_code)
            return response

        get()  # warm
        timing, response = timed(get, repeat)
        with CaptureQueriesContext(connection) as queries:
            get()
        cl = response.context["cl"] if response.context and "cl" in response.context else None
        timing["queries"] = len(queries)
        timing["sql_ms"] = round(sum(float(q["time"]) for q in queries.captured_queries) * 1000, 1)
        if cl is not None:
            timing["result_count"] = cl.result_count
            timing["count_is_estimate"] = cl.paginator.is_estimate
            timing["slowest_query_ms"] = max(
                float(q["time"]) * 1000 for q in queries.captured_queries
            )
        results[name] = timing
        print(f"  {name}: {timing}", flush=True)
    return results


def measure_export_in_child(params: dict, user: str) -> dict:
    """Runs in a fresh process: stream one export to /dev/null, report time and peak RSS."""
    from django.contrib.auth.models import User
    from django.test import Client

    client = Client()
    client.force_login(User.objects.get(username=user))
    # Warm the process (URLconf, templates, first queries) on an export of nothing.
    warm = client.get("/admin/audit/callrecord/export/", {"q": "no-such-request"})
    b"".join(warm.streaming_content)
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    response = client.get("/admin/audit/callrecord/export/", params)
    assert response.status_code == 200
    first_byte = None
    size = lines = 0
    with open(os.devnull, "wb") as sink:
        for chunk in response.streaming_content:
            if first_byte is None and chunk.count(b"\n") > 1:  # the first rows, not the header
                first_byte = time.perf_counter() - started
            size += len(chunk)
            lines += chunk.count(b"\n")
            sink.write(chunk)
    response.close()
    elapsed = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "rows": lines - 1,
        "mb": round(size / 1e6, 1),
        "seconds": round(elapsed, 2),
        "rows_per_second": round((lines - 1) / elapsed),
        "first_rows_ms": round((first_byte or 0) * 1000),
        "rss_before_mb": round(baseline_kb / 1024, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
    }


def measure_exports(catalog: dict) -> dict:
    department = catalog["departments"][0]
    cases = {
        "export, one department, one month (superuser)": (
            {
                "department": department.pk,
                "started_from": MONTH[0].isoformat(),
                "started_to": MONTH[1].isoformat(),
            },
            "bench-admin",
        ),
        "export, one month (department auditor)": (
            {"started_from": MONTH[0].isoformat(), "started_to": MONTH[1].isoformat()},
            "bench-auditor",
        ),
        "export, everything (superuser)": ({}, "bench-admin"),
    }
    results = {}
    for name, (params, user) in cases.items():
        out = subprocess.run(
            [sys.executable, __file__, "--export-child", json.dumps([params, user])],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "BENCH_AUDIT_DATABASE_URL": DATABASE_URL},
        )
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {name}: {results[name]}", flush=True)
    return results


def measure_tasks(purge: bool, retention_days: int) -> dict:
    from django.conf import settings

    from audit.models import CallRecord
    from audit.retention import call_bodies_purge
    from audit.speed import llm_speed_refresh

    results = {}
    started = time.perf_counter()
    llm_speed_refresh(now=END)
    results["refresh_measured_speed (7 days)"] = {
        "seconds": round(time.perf_counter() - started, 2),
        "records_in_window": CallRecord.objects.started_between(
            END - dt.timedelta(days=7), END
        ).count(),
    }
    if purge:
        settings.MESHGATE_AUDIT_RETENTION_DAYS = retention_days
        for run in ("first", "second"):
            started = time.perf_counter()
            purged = call_bodies_purge(now=END)
            results[f"purge_expired_bodies, {retention_days} days, {run} run"] = {
                "records": purged,
                "seconds": round(time.perf_counter() - started, 2),
            }
    for name, value in results.items():
        print(f"  {name}: {value}", flush=True)
    return results


def table_size() -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_size_pretty(pg_relation_size('audit_callrecord')),"
            " pg_size_pretty(pg_total_relation_size('audit_callrecord')),"
            " pg_size_pretty(pg_indexes_size('audit_callrecord'))"
        )
        heap, total, indexes = cursor.fetchone()
    return {"heap": heap, "total_with_toast_and_indexes": total, "indexes": indexes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--refill", action="store_true", help="empty the table and fill again")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--purge", action="store_true", help="also time the retention purge")
    parser.add_argument("--retention-days", type=int, default=90, help="for --purge")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--export-child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.export_child:
        _setup_django()
        params, user = json.loads(args.export_child)
        print(json.dumps(measure_export_in_child(params, user)))
        return

    ensure_database()
    _setup_django()
    from django.core.management import call_command
    from django.db import connection

    from audit.models import CallRecord

    call_command("migrate", verbosity=0)
    catalog = seed_catalog()
    figures: dict = {"database": connection.settings_dict["NAME"], "load_before": os.getloadavg()}
    existing = CallRecord.objects.count()
    if args.refill and existing:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {CallRecord._meta.db_table}")
        existing = 0
    if existing < args.records:
        print(f"filling {args.records - existing:,} records ...", flush=True)
        seconds = fill(args.records - existing, catalog)
        figures["fill"] = {"records": args.records - existing, "seconds": round(seconds, 1)}
        print(f"  done in {seconds:.0f} s", flush=True)
    figures["records"] = CallRecord.objects.count()
    figures["table"] = table_size()
    print(f"{figures['records']:,} records; table {figures['table']}", flush=True)
    print("pages:", flush=True)
    figures["pages"] = measure_pages(catalog, args.repeat)
    print("exports (each in a fresh process):", flush=True)
    figures["exports"] = measure_exports(catalog)
    print("tasks:", flush=True)
    figures["tasks"] = measure_tasks(args.purge, args.retention_days)
    figures["load_after"] = os.getloadavg()
    print(f"load average before {figures['load_before']}, after {figures['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
