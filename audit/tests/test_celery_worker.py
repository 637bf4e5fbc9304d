"""A real Celery worker process, against real Redis and PostgreSQL, killed with SIGKILL in the
middle of `build_chargeback`: after redelivery to a new worker nothing is lost or doubled.

Runs only when DATABASE_URL is PostgreSQL and REDIS_URL is set (CI's second pass): the worker
process must read the test's committed data from a database it can reach, and the broker must
be Redis. Use your own database name and Redis db number.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.db.models import Sum

from audit import services, tasks
from audit.models import CallRecord, ChargebackReport, UsageRollup
from audit.tests.usage_data import FIRST_INSTANT, NEXT_MONTH_FIRST, cents, generate_month

ON_POSTGRES = settings.DATABASES["default"]["ENGINE"].endswith("postgresql")
WITH_REDIS = bool(settings.REDIS_URL)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not (ON_POSTGRES and WITH_REDIS),
        reason="POSTGRES+REDIS ONLY: a real worker needs DATABASE_URL=postgres://... and "
        "REDIS_URL=redis://... (CI runs it)",
    ),
]

BASE_DIR = Path(__file__).resolve().parents[2]
BLOCKED_DAY = dt.date(2026, 10, 15)
VISIBILITY = 5  # seconds before Redis hands an unacknowledged message to another worker


def database_url() -> str:
    db = settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_worker(name: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        REDIS_URL=settings.REDIS_URL,
        # Unacknowledged messages go back to the queue after VISIBILITY seconds. (A
        # running task's message is restored too once this passes: the task, built in about
        # a second here, is keyed by its id, so a second delivery adds no version.)
        MESHGATE_TASK_VISIBILITY=str(VISIBILITY),
    )
    command = [sys.executable, "-m", "celery", "-A", "meshsite", "worker"]
    command += ["--pool", "prefork", "--concurrency", "1", "--loglevel", "INFO", "-n", name]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    return subprocess.Popen(
        command,
        cwd=BASE_DIR,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: SIGKILL reaches the pool children too
    )


def kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    process.wait(timeout=30)


def wait_for(predicate, *, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{log.read_text()[-4000:]}")


def lock_holder():
    """A separate connection holding the roll-up lock of one day, so the task stops there."""
    import psycopg

    holder = psycopg.connect(database_url().replace("postgres://", "postgresql://"))
    holder.execute(
        "SELECT pg_advisory_xact_lock(%s, %s)",
        [services._LOCK_ROLLUP_DAY, BLOCKED_DAY.toordinal()],
    )
    return holder


def someone_waits_for_the_lock(holder) -> bool:
    row = holder.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND classid = %s AND objid = %s",
        [services._LOCK_ROLLUP_DAY, BLOCKED_DAY.toordinal()],
    ).fetchone()
    return row[0] > 0


@pytest.fixture
def clean_broker():
    """An empty default queue, before and after (only the broker's keys: the cache stays)."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    broker_keys = ("celery", "unacked", "unacked_index", "unacked_mutex")
    client.delete(*broker_keys)
    yield client
    client.delete(*broker_keys)


def test_a_worker_killed_mid_chargeback_loses_nothing_after_redelivery(
    cast, clean_broker, tmp_path
):
    CallRecord.objects.bulk_create(generate_month(cast, count=3000))
    expected = CallRecord.objects.filter(
        started_at__gte=FIRST_INSTANT, started_at__lt=NEXT_MONTH_FIRST
    ).aggregate(cost=Sum("cost"))["cost"]
    log = tmp_path / "worker.log"
    holder = lock_holder()
    workers: list[subprocess.Popen] = []
    try:
        workers.append(start_worker("cb-first@%h", log))
        tasks.build_chargeback.delay("2026-10")
        # The task has rolled up the first fortnight and waits on the 15th: mid-task.
        wait_for(lambda: someone_waits_for_the_lock(holder), timeout=60, what="the task", log=log)
        mid_task = time.monotonic()

        kill_group(workers[0])

        tail = log.read_text()[-4000:]
        assert ChargebackReport.objects.count() == 0, tail
        assert UsageRollup.objects.count() == 0, tail  # its transaction never committed
        holder.rollback()  # the lock is free; the message is still unacknowledged in Redis
        # A starting worker gives back unacknowledged messages older than the visibility
        # timeout (later, kombu sweeps only every ~100 s): start it once that has passed.
        time.sleep(max(0.0, mid_task + VISIBILITY + 1 - time.monotonic()))
        workers.append(start_worker("cb-second@%h", log))
        wait_for(
            lambda: ChargebackReport.objects.count() == 3,
            timeout=90,
            what="the redelivered task",
            log=log,
        )
    finally:
        holder.close()
        for worker in workers:
            kill_group(worker, signal.SIGTERM)

    reports = ChargebackReport.objects.all()
    # One version per department: the killed attempt left nothing behind.
    assert sorted(r.version for r in reports) == [1, 1, 1], log.read_text()[-4000:]
    assert cents(sum(r.total_cost for r in reports)) == cents(expected)
    rollup_cost = UsageRollup.objects.filter(day__month=10).aggregate(c=Sum("cost"))["c"]
    assert rollup_cost == expected
    assert "build_chargeback" in log.read_text()
    assert Decimal(expected) > 0


def test_a_pool_process_killed_mid_chargeback_is_requeued_by_its_worker(
    cast, clean_broker, tmp_path
):
    """reject_on_worker_lost: the worker's main process sees its child die and puts the
    message back at once, without waiting for the visibility timeout."""
    CallRecord.objects.bulk_create(generate_month(cast, count=3000))
    expected = CallRecord.objects.filter(
        started_at__gte=FIRST_INSTANT, started_at__lt=NEXT_MONTH_FIRST
    ).aggregate(cost=Sum("cost"))["cost"]
    log = tmp_path / "worker.log"
    holder = lock_holder()
    worker = start_worker("cb-pool@%h", log)
    try:
        tasks.build_chargeback.delay("2026-10")
        wait_for(lambda: someone_waits_for_the_lock(holder), timeout=60, what="the task", log=log)
        children = subprocess.run(
            ["pgrep", "-P", str(worker.pid)], capture_output=True, text=True, check=True
        ).stdout.split()
        assert len(children) == 1, children  # --concurrency 1: the process running the task

        os.kill(int(children[0]), signal.SIGKILL)
        wait_for(lambda: "SIGKILL" in log.read_text(), timeout=30, what="the loss", log=log)
        holder.rollback()
        wait_for(
            lambda: ChargebackReport.objects.count() == 3,
            timeout=60,
            what="the requeued task",
            log=log,
        )
    finally:
        holder.close()
        kill_group(worker, signal.SIGTERM)

    reports = ChargebackReport.objects.all()
    assert sorted(r.version for r in reports) == [1, 1, 1], log.read_text()[-4000:]
    assert cents(sum(r.total_cost for r in reports)) == cents(expected)
    assert worker.returncode is not None


def test_generate_now_in_the_admin_is_built_by_a_real_worker(cast, clean_broker, tmp_path, client):
    CallRecord.objects.bulk_create(generate_month(cast, count=500))
    log = tmp_path / "worker.log"
    client.force_login(cast.admin)

    response = client.post("/admin/audit/chargebackreport/generate/", {"month": "2026-10"})

    assert response.status_code == 302
    assert ChargebackReport.objects.count() == 0  # queued, not built in the request
    assert clean_broker.llen("celery") == 1
    worker = start_worker("cb-admin@%h", log)
    try:
        wait_for(
            lambda: ChargebackReport.objects.count() == 3, timeout=60, what="the reports", log=log
        )
    finally:
        kill_group(worker, signal.SIGTERM)
    assert {r.generated_by for r in ChargebackReport.objects.all()} == {cast.admin}
    page = client.get("/admin/audit/chargebackreport/").content.decode()
    assert page.count("(current)") == 3
