"""A live Meshgate under uvicorn (ASGI, so answers really stream) and a headless Chromium.

The server is a subprocess running `meshsite.asgi:application`, the same entry point
as production, against the test's database:
- PostgreSQL: the test database itself; tests use `transactional_db`, so what they
  write is committed and the server sees it.
- SQLite: the test database is in memory, which another process cannot open. For the
  test's duration the default connection is pointed at a file database built from the
  models (as `--nomigrations` does), shared with the server (WAL: both read while one
  writes); then the in-memory connection is put back untouched.
The cast's connection "sim" points at the session's provider simulator.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _database_url(settings_dict: dict) -> str:
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    host = settings_dict.get("HOST") or "localhost"
    return f"postgres://{auth}{host}{port}/{quote(settings_dict['NAME'], safe='')}"


@pytest.fixture
def shared_database(transactional_db, tmp_path):
    """The test database, reachable by another process; yields its DATABASE_URL."""
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor != "sqlite" or not connection.is_in_memory_db():
        yield _database_url(connection.settings_dict)
        return

    memory_connection = connection.connection
    memory_name = connection.settings_dict["NAME"]
    connection.connection = None  # keep the in-memory database alive, aside
    connection.settings_dict["NAME"] = str(tmp_path / "live.sqlite3")
    try:
        call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
        yield _database_url(connection.settings_dict)
    finally:
        connection.close()
        connection.settings_dict["NAME"] = memory_name
        connection.connection = memory_connection


@dataclass
class LiveSite:
    url: str
    cast: object
    simulator: object
    database_url: str

    def wait_for_record(
        self, request_id: str | None = None, *, count: int = 1, timeout: float = 10, **filters
    ):
        """The CallRecords the server wrote, once `count` are completed (the writer batches)."""
        from audit.models import CallRecord

        query = CallRecord.objects.filter(**filters)
        if request_id:
            query = query.filter(request_id=request_id)
        deadline = time.monotonic() + timeout
        while True:
            records = list(query.exclude(outcome=CallRecord.Outcome.INTERRUPTED))
            if len(records) >= count or time.monotonic() > deadline:
                return records
            time.sleep(0.1)


@functools.cache
def _server_password_hash(password: str) -> str:
    """A hash with the production hasher (slow on purpose), made once per session."""
    from django.conf import global_settings
    from django.contrib.auth.hashers import make_password
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=global_settings.PASSWORD_HASHERS):
        return make_password(password)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@pytest.fixture
def live_site(shared_database, simulator, tmp_path):
    from conftest import build_cast

    simulator.reset()
    cast = build_cast(base_url=simulator.openai_base)
    # The test settings hash with MD5 for speed; the server runs the real settings, so the
    # people who log in through the browser get a hash it knows.
    for user in (cast.alice, cast.bob, cast.charlie):
        user.password = _server_password_hash(cast.PASSWORD)
        user.save(update_fields=["password"])

    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_ALLOW_ASYNC_UNSAFE", "DATABASE_URL"}
    }
    env.update(
        DATABASE_URL=shared_database,
        MESHGATE_ALLOW_PRIVATE_UPSTREAMS="true",  # the simulator listens on 127.0.0.1
        MESHGATE_SECURE_COOKIES="false",  # plain http in tests
        MESHGATE_CACHE_CHECK_SECONDS="0.2",
        PYTHONUNBUFFERED="1",
    )
    sock = _free_socket()
    port = sock.getsockname()[1]
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "meshsite.asgi:application",
                "--fd",
                str(sock.fileno()),
                "--lifespan",
                "on",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=ROOT,
            env=env,
            pass_fds=[sock.fileno()],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    sock.close()  # the server holds its own copy of the listening socket
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                pytest.fail(f"the live server exited:\n{log_path.read_text()}")
            try:
                if httpx.get(url + "/accounts/login/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the live server did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield LiveSite(url=url, cast=cast, simulator=simulator, database_url=shared_database)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if os.environ.get("PLAYGROUND_SERVER_LOG"):
            sys.stderr.write(log_path.read_text())


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread while it lives, which
    # Django takes for an async context; the ORM calls of these tests (setup, assertions,
    # the database flush between tests) are plain synchronous code all the same.
    # Module scope: the flag is gone before any other test module runs.
    saved = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            yield browser
            browser.close()
    finally:
        if saved is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = saved


class BrowserPage:
    """A Playwright page that remembers script errors, dialogs and CSP violations."""

    def __init__(self, page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.csp_violations: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("dialog", self._on_dialog)
        page.on("console", self._on_console)

    def _on_dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _on_console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)


@pytest.fixture
def browser_page(chromium, live_site):
    context = chromium.new_context(
        base_url=live_site.url,
        viewport={"width": 1360, "height": 900},
        permissions=["clipboard-read", "clipboard-write"],
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield BrowserPage(page)
    context.close()


def log_in(page, username: str, password: str) -> None:
    page.goto("/accounts/login/?next=/playground/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    try:
        page.wait_for_url("**/playground/")
    except Exception:
        print(f"Login as {username} did not reach the playground; the page at {page.url}:")
        print(page.text_content("body"))
        raise
    page.wait_for_selector("body[data-ready=true]")
