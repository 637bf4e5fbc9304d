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
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# bench/ is not a package: the data module is imported from beside this file.
from audit_data import END, MONTH, fill, seed_catalog  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/bench_audit"
DATABASE_URL = os.environ.get("BENCH_AUDIT_DATABASE_URL", DEFAULT_URL)


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
        # Summed over the partitions (a partitioned parent holds no rows itself).
        cursor.execute(
            "SELECT pg_size_pretty(sum(pg_relation_size(relid))),"
            " pg_size_pretty(sum(pg_total_relation_size(relid))),"
            " pg_size_pretty(sum(pg_indexes_size(relid)))"
            " FROM pg_partition_tree('audit_callrecord') WHERE isleaf"
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
