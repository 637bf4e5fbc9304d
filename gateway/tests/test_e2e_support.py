"""Real processes for the end-to-end tests: a seeded database file and uvicorn serving Meshgate.

Not tests itself: the e2e modules import the fixtures. The gateway runs as a
subprocess (`uvicorn meshsite.asgi:application`) on a free port, against a
temporary SQLite file (its tables created from the models, as the test suite
does) and a Redis database of its own for the shared cache, so a change made by
another process (a revoked key, a withdrawn grant) reaches it as in production.
The provider simulator is the session `simulator` fixture from conftest.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import redis_url_for_tests

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
REDIS_URL = os.environ.get("MESHGATE_TEST_GW_REDIS_URL", redis_url_for_tests(3))

# Run inside a fresh interpreter: create the tables, seed the cast and extra models, print keys.
SEED = r"""
import json, os, sys
from datetime import timedelta
import django
django.setup()
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
settings.MIGRATION_MODULES = {app.label: None for app in apps.get_app_configs()}
call_command("migrate", run_syncdb=True, verbosity=0)
sys.path.insert(0, os.getcwd())
from conftest import build_cast
from decimal import Decimal
from django.utils import timezone
from guardian.shortcuts import assign_perm
from connections.models import LLM, Alias, AliasTarget, Connection
from gateway.models import ApiKey
from gateway.keys import apikey_create, apikey_revoke

sim = os.environ["SIM_OPENAI_BASE"]
cast = build_cast(base_url=sim)

def llm(connection, name, kind="chat"):
    model = LLM.objects.create(
        connection=connection, name=name, kind=kind, approved=True,
        input_price=Decimal("1.00"), output_price=Decimal("2.00"),
        cached_input_price=Decimal("0.50"),
    )
    assign_perm("connections.use_llm", cast.marketing.group, model)
    return model

broken = llm(cast.connection, "broken-fail-503")
llm(cast.connection, "limited-fail-429")
llm(cast.connection, "bad-fail-400")
llm(cast.connection, "slow-1000")
llm(cast.connection, "drip-100-drop-3")
llm(cast.connection, "drip-300")
chain = Alias.objects.create(name="fallback-chain")
AliasTarget.objects.create(alias=chain, llm=broken, position=0)
AliasTarget.objects.create(alias=chain, llm=cast.gpt4o_mini, position=1)

retrying = Connection(name="Retrying", slug="retrying", kind="openai_compatible", base_url=sim,
                      is_simulator=True, timeout_seconds=10, max_retries=2)
retrying.set_secrets({"api_key": "sim-secret-key-not-real"})
retrying.save()
llm(retrying, "retry-model")

private = Connection(name="Private", slug="private", kind="openai_compatible", base_url=sim,
                     is_simulator=True, timeout_seconds=10, max_retries=0,
                     payload_policy="redacted")
private.set_secrets({"api_key": "sim-secret-key-not-real"})
private.save()
llm(private, "gpt-4o-mini")
quiet = Connection(name="Quiet", slug="quiet", kind="openai_compatible", base_url=sim,
                   is_simulator=True, timeout_seconds=10, max_retries=0, payload_policy="metadata")
quiet.set_secrets({"api_key": "sim-secret-key-not-real"})
quiet.save()
llm(quiet, "gpt-4o-mini")

# A connection whose options make the adapter itself raise: Meshgate's own failure, not upstream's.
misconfigured = Connection(name="Misconfigured", slug="misconfigured", kind="openai_compatible",
                           base_url=sim, is_simulator=True, max_retries=0,
                           options={"max_connections": "many"})
misconfigured.save()
llm(misconfigured, "gpt-4o-mini")

# One connection of each provider kind, all served by the simulator's wire formats.
root = sim[: -len("/v1")]
kinds = {
    "openai": dict(base_url=sim, secrets={"api_key": "sim-secret-key-not-real"}),
    "azure_openai": dict(base_url=root, api_version="2024-10-21",
                         secrets={"api_key": "sim-secret-key-not-real"}),
    "bedrock": dict(base_url=root, region="us-east-1",
                    secrets={"aws_access_key_id": "AKIA" + "SIMULATOR0000001",
                             "aws_secret_access_key": "sim-aws-secret-not-real"}),
}
models = {"openai": ["gpt-4o-mini"], "azure_openai": ["chat-deployment"],
          "bedrock": ["anthropic.claude-3-haiku-20240307-v1:0"]}
for kind, fields in kinds.items():
    secrets = fields.pop("secrets")
    conn = Connection(name=f"Kind {kind}", slug=f"kind-{kind.replace('_', '-')}", kind=kind,
                      is_simulator=True, timeout_seconds=10, max_retries=0, **fields)
    conn.set_secrets(secrets)
    conn.save()
    for name in models[kind]:
        llm(conn, name)

keys = {}
_, keys["alice"] = apikey_create(owner=cast.alice, department=cast.marketing, purpose="e2e tests")
_, keys["alice2"] = apikey_create(owner=cast.alice, department=cast.marketing, purpose="revoke me")
_, keys["bob"] = apikey_create(owner=cast.bob, department=cast.finance, purpose="e2e tests")
revoked, keys["revoked"] = apikey_create(owner=cast.alice, department=cast.marketing, purpose="x")
apikey_revoke(api_key=revoked, actor=cast.admin)
expired, keys["expired"] = apikey_create(owner=cast.alice, department=cast.marketing, purpose="x",
                                         expires_at=timezone.now() + timedelta(days=1))
ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
from django.contrib.auth import get_user_model
dora = get_user_model().objects.create_user("dora")
dora.groups.add(cast.marketing.group)
_, keys["inactive"] = apikey_create(owner=dora, department=cast.marketing, purpose="left")
dora.is_active = False
dora.save()
print(json.dumps(keys))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gateway:
    """A Meshgate uvicorn process and what the tests need to talk to it and its database."""

    def __init__(self, env: dict[str, str], keys: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.keys = keys
        self.workdir = workdir
        self.processes: list[subprocess.Popen] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, *, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
        port = free_port()
        log = open(self.workdir / f"uvicorn-{port}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "uvicorn",
                "meshsite.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env={**self.env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError((self.workdir / f"uvicorn-{port}.log").read_text())
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("uvicorn did not start")
        if not self.port:
            self.port = port
        return process, port

    def run(self, code: str) -> str:
        """Run Python with Django set up on the gateway's database and cache; its stdout."""
        prelude = "import django\ndjango.setup()\n"
        result = subprocess.run(
            [PYTHON, "-c", prelude + code],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-3000:])
        return result.stdout

    def records(self, where: str = "1=1") -> list[dict]:
        """CallRecords straight from the database (no Django: a plain read)."""
        import sqlite3

        url = self.env["DATABASE_URL"]
        query = f"SELECT * FROM audit_callrecord WHERE {where} ORDER BY id"
        if url.startswith(("postgres://", "postgresql://")):
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(url, row_factory=dict_row) as conn:
                return conn.execute(query).fetchall()
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        db.row_factory = sqlite3.Row
        try:
            rows = db.execute(query).fetchall()
        finally:
            db.close()
        return [dict(row) for row in rows]

    def record(self, request_id: str, *, wait: float = 5.0, outcome_not: str = "") -> dict:
        deadline = time.monotonic() + wait
        while True:
            rows = self.records(f"request_id = '{request_id}'")
            if rows and rows[0]["outcome"] != outcome_not:
                return rows[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no record for {request_id}: {rows}")
            time.sleep(0.05)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def make_gateway(simulator, tmp_path: Path, **settings: str) -> Gateway:
    """A seeded gateway (not started); `settings` override its environment."""
    db_file = tmp_path / "meshgate.sqlite3"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "meshsite.settings",
        "DATABASE_URL": f"sqlite:///{db_file}",
        "REDIS_URL": REDIS_URL,
        "MESHGATE_CACHE_PREFIX": "gw-e2e-" + uuid.uuid4().hex[:8],
        "MESHGATE_ALLOW_PRIVATE_UPSTREAMS": "true",
        "MESHGATE_CACHE_CHECK_SECONDS": "0.5",
        "MESHGATE_LOG_LEVEL": "WARNING",
        "SIM_OPENAI_BASE": simulator.openai_base,
        "PYTHONPATH": str(ROOT),
        **settings,
    }
    result = subprocess.run(
        [PYTHON, "-c", SEED], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    keys = json.loads(result.stdout.strip().splitlines()[-1])
    return Gateway(env, keys, tmp_path)


@pytest.fixture(scope="module", name="gateway")
def gateway_fixture(simulator, tmp_path_factory):
    """One seeded database and one Meshgate worker per test module."""
    gw = make_gateway(simulator, tmp_path_factory.mktemp("gw"))
    gw.start()
    yield gw
    gw.stop()


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """The URL of a PostgreSQL database of its own, beside the test database (DATABASE_URL),
    created for the caller and dropped after it."""
    import psycopg

    server = urlsplit(os.environ["DATABASE_URL"])
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = server._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def post(gw: Gateway, body: dict, key: str = "alice", path: str = "/chat/completions", **kwargs):
    """A call to the running gateway with one of its seeded keys (a 60 s timeout unless told)."""
    kwargs.setdefault("timeout", 60)
    return httpx.post(
        gw.url + path, json=body, headers={"Authorization": f"Bearer {gw.keys[key]}"}, **kwargs
    )
