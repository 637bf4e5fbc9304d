"""Several gateway workers on one port, against PostgreSQL and Redis, as in production.

Two uvicorn workers share one listening socket (`--workers 2`) and one metrics directory;
calls go through the real openai SDK, each on a connection of its own so both workers
take some. A scrape, whichever worker answers it, counts every call of both (read with
prometheus-client's own parser), and the trail has a record for every call. `/readyz`
goes 503 while the database is unreachable (a relay between the gateway and the shared
PostgreSQL is cut; the server itself is never touched) and 200 again once it is back.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import openai
import orjson
import psycopg
import pytest
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

from gateway.tests.relay import Relay
from gateway.tests.test_e2e_support import PYTHON, ROOT, free_port, make_gateway

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="several workers share PostgreSQL"
)

MESSAGES = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def seeded(simulator, tmp_path_factory):
    """A seeded gateway (not started) on a PostgreSQL database of its own."""
    server = urlsplit(os.environ["DATABASE_URL"])
    name = f"e2e_workers_{uuid.uuid4().hex[:8]}"
    admin = server._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    workdir = tmp_path_factory.mktemp("gw-workers")
    try:
        gw = make_gateway(
            simulator,
            workdir,
            DATABASE_URL=server._replace(path=f"/{name}").geturl(),
            MESHGATE_METRICS_DIR=str(workdir / "metrics"),
        )
        yield gw
        gw.stop()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def serve(gw, workers: int, **env: str) -> tuple[subprocess.Popen, int]:
    """uvicorn with `workers` processes on one port (the README's production command)."""
    port = free_port()
    log = open(gw.workdir / f"workers-{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [
            PYTHON, "-m", "uvicorn", "meshsite.asgi:application",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning",
        ],
        cwd=ROOT,
        env={**gw.env, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    gw.processes.append(process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((gw.workdir / f"workers-{port}.log").read_text())
        try:
            # Ready: the database answers (behind the catalog each worker loads at startup).
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return process, port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the workers did not start")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def one_call(port: int, key: str) -> str:
    # A client of its own per call: a connection of its own, which either worker may accept.
    with openai.OpenAI(
        api_key=key, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=30
    ) as client:
        response = client.chat.completions.with_raw_response.create(
            model="sim/gpt-4o", messages=MESSAGES
        )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


def requests_by_worker(directory) -> dict[str, float]:
    """Each worker's own count of calls, from the files the workers write."""
    counts = {}
    for path in directory.glob("*.json"):
        state = orjson.loads(path.read_bytes())
        counts[path.stem] = sum(value for _labels, value in state.get("meshgate_requests", []))
    return counts


def scraped_calls(port: int) -> tuple[float, float]:
    """(chat calls that ended ok, their input tokens), from one scrape of /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    calls = tokens = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "meshgate_requests_total" and sample.labels["outcome"] == "ok":
                calls += sample.value
            if sample.name == "meshgate_tokens_total" and sample.labels["token_type"] == "input":
                tokens += sample.value
    return calls, tokens


def test_two_workers_on_one_port_count_every_call_in_metrics_and_trail(seeded):
    metrics_dir = seeded.workdir / "metrics"
    process, port = serve(seeded, 2)
    try:
        sent: list[str] = []
        key = seeded.keys["alice"]
        # Until both workers have taken calls (connections are spread by the kernel).
        with ThreadPoolExecutor(8) as pool:
            for _ in range(10):
                sent += pool.map(lambda _: one_call(port, key), range(16))
                time.sleep(1.2)  # each worker writes its counts every second
                if len([n for n in requests_by_worker(metrics_dir).values() if n]) >= 2:
                    break
        by_worker = requests_by_worker(metrics_dir)
        assert len([n for n in by_worker.values() if n]) == 2, by_worker

        # Every scrape, whichever worker takes it, sees every call of both.
        deadline = time.monotonic() + 10
        while True:
            calls, tokens = scraped_calls(port)
            if calls >= len(sent) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert calls == len(sent)
        assert scraped_calls(port)[0] == len(sent)  # the next scrape too

        # The trail has every call, with the tokens the metrics counted.
        quoted = ",".join(f"'{request_id}'" for request_id in sent)
        deadline = time.monotonic() + 10
        while True:
            records = seeded.records(f"request_id IN ({quoted}) AND outcome = 'ok'")
            if len(records) == len(sent) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(records) == len(sent)
        assert sum(r["prompt_tokens"] for r in records) == tokens
    finally:
        stop(process)


def test_readyz_is_503_while_the_database_is_unreachable(seeded):
    direct = urlsplit(seeded.env["DATABASE_URL"])
    relay = Relay(direct.hostname or "127.0.0.1", direct.port or 5432)
    netloc = direct.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{relay.port}"
    via = direct._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host)
    process, port = serve(
        seeded,
        1,
        DATABASE_URL=via.geturl(),
        MESHGATE_METRICS_DIR="",
        MESHGATE_AUDIT_WAIT_SECONDS="2",
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> httpx.Response:
        return httpx.get(base + "/readyz", timeout=10)

    def until(status: int, seconds: float = 10.0) -> httpx.Response:
        deadline = time.monotonic() + seconds
        while True:
            response = ready()
            if response.status_code == status or time.monotonic() > deadline:
                return response
            time.sleep(0.2)

    try:
        assert until(200).status_code == 200
        relay.kill()
        down = until(503)
        assert down.status_code == 503, down.text
        assert down.json()["checks"]["database"] == "unavailable"
        assert down.json()["checks"]["redis"] == "ok"
        assert httpx.get(base + "/healthz", timeout=5).status_code == 200  # alive all along
        relay.resume()
        assert until(200).status_code == 200

        relay.freeze()  # a database that stopped answering: 503 in bounded time, not a hang
        started = time.monotonic()
        frozen = until(503, seconds=15)
        assert frozen.status_code == 503
        assert time.monotonic() - started < 12
        relay.resume()
        assert until(200, seconds=15).status_code == 200
    finally:
        relay.close()
        stop(process)


def test_a_rate_limit_holds_across_two_workers_and_its_refusals_are_counted(seeded):
    key = seeded.run(
        "from django.contrib.auth.models import User\n"
        "from connections.models import Department\n"
        "from gateway.keys import apikey_create\n"
        "from quotas.services import ratelimit_create\n"
        "alice = User.objects.get(username='alice')\n"
        "marketing = Department.objects.get(cost_center='MKT-100')\n"
        "api_key, raw = apikey_create(owner=alice, department=marketing, purpose='limited')\n"
        "ratelimit_create(name='Ten a minute', scope='api_key', api_key=api_key,"
        " requests_per_minute=10)\n"
        "print(raw)\n"
    ).strip()
    process, port = serve(seeded, 2)
    try:

        def status(_: int) -> int:
            with openai.OpenAI(
                api_key=key, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=30
            ) as client:
                try:
                    client.chat.completions.create(model="sim/gpt-4o", messages=MESSAGES)
                except openai.RateLimitError:
                    return 429
            return 200

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(status, range(16)))
        assert statuses.count(200) == 10 and statuses.count(429) == 6, statuses

        deadline = time.monotonic() + 10
        while True:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            refused = sum(
                s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "meshgate_quota_refusals_total"
                and s.labels["reason"] == "rate_limited"
            )
            if refused >= 6 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert refused == 6
    finally:
        stop(process)
