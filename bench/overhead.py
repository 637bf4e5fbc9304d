"""Meshgate's overhead over calling the provider directly (`make bench`).

Starts the provider simulator and Meshgate (uvicorn, one worker, uvloop and
httptools), in two variants: SQLite with the local-memory cache, and
PostgreSQL + Redis (database `bench_meshgate`, created, built and seeded here).
A load generator in a separate process (asyncio, keep-alive connections,
httptools' parser: light enough not to be the bottleneck) sends a fixed number
of plain and streamed chat requests at concurrencies 1, 16 and 64, straight to
the simulator and through Meshgate, and prints requests/s, p50 and p99 latency
and the added latency. Then it counts the audit records against the requests
sent: every call through Meshgate must have its completed record. A `-quotas`
variant (`postgres-quotas`, `sqlite-quotas`) adds three quotas every call matches
(department, user, API key) and a rate limit per key, department and LLM, all
too large to refuse anything: what admission costs.

    .venv/bin/python bench/overhead.py [--requests 2000] [--variants sqlite,postgres-quotas]

A variant may carry modifiers after a "+" (`make bench-ops`): `postgres+2w` runs two
uvicorn workers on one port, `postgres+bare` turns metrics and call lines off,
`postgres+traced` traces every call to an OTLP sink in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SIM_KEY = "sim-secret-key-not-real"
CONCURRENCIES = (1, 16, 64)
PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/bench_meshgate")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4")

SEED = r"""
import django
django.setup()
from django.core.management import call_command
# The schema production runs (migrations: indexes, constraints, storage parameters).
call_command("migrate", verbosity=0)
import os, sys
sys.path.insert(0, os.getcwd())
from conftest import build_cast
from gateway.keys import apikey_create
cast = build_cast(base_url=os.environ["BENCH_SIM_BASE"])
_, key = apikey_create(owner=cast.alice, department=cast.marketing, purpose="bench")
print(key)
"""

# Three quotas every bench call matches, and a rate limit at each level; none refuses.
QUOTAS = r"""
import django
django.setup()
from decimal import Decimal
from django.contrib.auth.models import User
from connections.models import LLM, Department
from gateway.models import ApiKey
from quotas.services import quota_create, ratelimit_create
big = Decimal("1000000")
department = Department.objects.get(cost_center="MKT-100")
quota_create(name="Bench department", amount=big, department=department)
quota_create(name="Bench user", amount=big, period="day", user=User.objects.get(username="alice"))
quota_create(name="Bench key", amount=big, period="rolling", rolling_days=7,
             api_key=ApiKey.objects.get(purpose="bench"))
limits = {"requests_per_minute": 10**8, "tokens_per_minute": 10**9}
ratelimit_create(name="Bench key", scope="api_key", **limits)
ratelimit_create(name="Bench department", scope="department", **limits)
mini = LLM.objects.get(mesh_id="sim/gpt-4o-mini")
ratelimit_create(name="Bench LLM", scope="llm", llm=mini, **limits)
"""

COUNT = r"""
import django
django.setup()
from audit.models import CallRecord
print(CallRecord.objects.filter(outcome="ok").count(), CallRecord.objects.count())
"""


# --- the load generator (runs in its own process) -------------------------------------------


class _Response:
    """httptools callbacks: whether the response is complete, and its last bytes."""

    def __init__(self) -> None:
        self.done = False
        self.tail = b""

    def on_body(self, body: bytes) -> None:
        self.tail = (self.tail + body)[-64:]

    def on_message_complete(self) -> None:
        self.done = True


async def _one_connection(port, request, remaining, latencies, failures, expect):
    import httptools

    reader = writer = None
    while remaining[0] > 0:
        remaining[0] -= 1
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        state = _Response()
        parser = httptools.HttpResponseParser(state)
        started = time.perf_counter()
        writer.write(request)
        while not state.done:
            data = await reader.read(65536)
            if not data:
                break
            parser.feed_data(data)
        latencies.append(time.perf_counter() - started)
        if not state.done or parser.get_status_code() != 200 or expect not in state.tail:
            failures[0] += 1
        if not state.done or not parser.should_keep_alive():
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def _load(port: int, request: bytes, total: int, concurrency: int, expect: bytes) -> dict:
    remaining, failures, latencies = [total], [0], []
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _one_connection(port, request, remaining, latencies, failures, expect)
            for _ in range(concurrency)
        )
    )
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "failures": failures[0],
        "sent": len(latencies),
    }


def loadgen_main(args: list[str]) -> None:
    port, key, model, stream, total, concurrency = args
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say something short about the sea"}],
        "max_tokens": 24,
    }
    if stream == "1":
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    payload = json.dumps(body).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    expect = b"[DONE]\n\n" if stream == "1" else b"}"
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_load(int(port), request, int(total), int(concurrency), expect))
    print(json.dumps(result))


def run_load(port: int, key: str, model: str, stream: bool, total: int, concurrency: int) -> dict:
    out = subprocess.run(
        [
            PYTHON,
            __file__,
            "--loadgen",
            str(port),
            key,
            model,
            "1" if stream else "0",
            str(total),
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout)


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(port: int, path: str, seconds: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answered on port {port}")


def start_simulator() -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [PYTHON, "-m", "simulator", "--port", str(port), "--api-key", SIM_KEY],
        cwd=ROOT,
    )
    wait_http(port, "/_sim/requests")
    return process, port


def prepare_postgres(url: str = PG_URL) -> None:
    """Drop and create the benchmark's own database."""
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def variant_env(
    variant: str, workdir: Path, sim_port: int, *, pg_url: str = PG_URL, redis_url: str = REDIS_URL
) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "meshsite.settings",
        "MESHGATE_ALLOW_PRIVATE_UPSTREAMS": "true",
        "MESHGATE_LOG_LEVEL": "WARNING",
        "BENCH_SIM_BASE": f"http://127.0.0.1:{sim_port}/v1",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("REDIS_URL", None)
    if variant.startswith("postgres"):
        env["DATABASE_URL"] = pg_url
        env["REDIS_URL"] = redis_url
        env["MESHGATE_CACHE_PREFIX"] = f"bench-{os.getpid()}-{variant}"
    else:
        env["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    return env


def prepare_variant(
    variant: str, workdir: Path, sim_port: int, *, pg_url: str = PG_URL, redis_url: str = REDIS_URL
) -> tuple[dict[str, str], str]:
    """A fresh database for the variant, seeded with the cast (and quotas): its env and API key."""
    if variant.startswith("postgres"):
        prepare_postgres(pg_url)
    env = variant_env(variant, workdir, sim_port, pg_url=pg_url, redis_url=redis_url)
    key = django_run(SEED, env).splitlines()[-1]
    if variant.endswith("-quotas"):
        django_run(QUOTAS, env)
    return env, key


# Variant modifiers, after a "+": "postgres+2w" (two workers on one port), "postgres+bare"
# (no metrics, no call log lines), "postgres+traced" (every call traced to a local OTLP sink).
MODIFIERS = ("2w", "bare", "traced")


def apply_modifiers(modifiers: list[str], env: dict[str, str], tmp: Path) -> int:
    """The environment the modifiers ask for; the number of workers."""
    unknown = set(modifiers) - set(MODIFIERS)
    if unknown:
        raise SystemExit(f"unknown variant modifier(s): {', '.join(sorted(unknown))}")
    if "bare" in modifiers:
        env.update(MESHGATE_METRICS="false", MESHGATE_CALL_LOG="false")
    if "traced" in modifiers:
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{otlp_sink()}",
            OTEL_TRACES_SAMPLER="always_on",
        )
    workers = 2 if "2w" in modifiers else 1
    if workers > 1:
        env["MESHGATE_METRICS_DIR"] = str(tmp / "metrics")
    return workers


def otlp_sink() -> int:
    """An OTLP/HTTP receiver that accepts and drops every export (a thread of this process)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def start_meshgate(env: dict[str, str], workers: int = 1) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "uvicorn",
            "meshsite.asgi:application",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    wait_http(port, "/v1/models")
    return process, port


def django_run(code: str, env: dict[str, str]) -> str:
    return subprocess.run(
        [PYTHON, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


# --- the benchmark --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    parser.add_argument(
        "--variants",
        default="sqlite,postgres,postgres-quotas",
        help="e.g. postgres,postgres+2w (two workers), postgres+bare (no metrics, no call "
        "log), postgres+traced (every call traced)",
    )
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]

    simulator, sim_port = start_simulator()
    rows: list[tuple] = []
    audits: list[str] = []
    try:
        direct = {}
        for stream in (False, True):
            for concurrency in CONCURRENCIES:
                total = args.requests if concurrency > 1 else max(200, args.requests // 4)
                direct[stream, concurrency] = run_load(
                    sim_port, SIM_KEY, "gpt-4o-mini", stream, total, concurrency
                )
        for variant in variants:
            with tempfile.TemporaryDirectory() as tmp:
                base, *modifiers = variant.split("+")
                env, key = prepare_variant(base, Path(tmp), sim_port)
                workers = apply_modifiers(modifiers, env, Path(tmp))
                gateway, port = start_meshgate(env, workers)
                sent = 0
                try:
                    for stream in (False, True):
                        for concurrency in CONCURRENCIES:
                            total = (
                                args.requests if concurrency > 1 else max(200, args.requests // 4)
                            )
                            result = run_load(
                                port, key, "sim/gpt-4o-mini", stream, total, concurrency
                            )
                            sent += result["sent"]
                            rows.append(
                                (variant, stream, concurrency, direct[stream, concurrency], result)
                            )
                    time.sleep(1)  # the last completions are in the writer's queue
                finally:
                    gateway.terminate()
                    gateway.wait(timeout=30)
                ok, total_records = django_run(COUNT, env).split()
                audits.append(
                    f"{variant}: {sent} requests sent, {total_records} audit records, "
                    f"{ok} completed ok"
                )
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    print_table(rows)
    print()
    for line in audits:
        print("audit", line)


def print_table(rows: list[tuple]) -> None:
    header = (
        f"{'variant':22} {'mode':6} {'conc':>4} | {'direct rps':>10} {'p50':>7} {'p99':>7} | "
        f"{'meshgate rps':>12} {'p50':>7} {'p99':>7} | {'added p50':>9} {'fail':>4}"
    )
    print(header)
    print("-" * len(header))
    for variant, stream, concurrency, direct, via in rows:
        print(
            f"{variant:22} {'stream' if stream else 'plain':6} {concurrency:>4} | "
            f"{direct['rps']:>10.0f} {direct['p50']:>6.1f}ms {direct['p99']:>5.1f}ms | "
            f"{via['rps']:>12.0f} {via['p50']:>6.1f}ms {via['p99']:>5.1f}ms | "
            f"{via['p50'] - direct['p50']:>7.1f}ms {direct['failures'] + via['failures']:>4}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        loadgen_main(sys.argv[2:])
    else:
        main()
