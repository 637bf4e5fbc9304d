"""What operators poll: `/metrics`, `/healthz`, `/readyz`, served beside `/v1/` (lean ASGI).

- `/healthz`: the process answers (its event loop turns). Nothing else is checked, so a
  database outage never gets a healthy worker restarted.
- `/readyz`: the database answers `SELECT 1`, Redis (when REDIS_URL is set) answers PING,
  and the audit writer is usable (its thread runs, its spool has room); 503 naming what is
  not. Checked at most once per `READY_CACHE_SECONDS`, one check at a time, each bounded by
  `READY_TIMEOUT_SECONDS`: cheap to poll every second from several probes.
- `/metrics`: every worker's metrics (`gateway.metrics`), in Prometheus' text format; with
  MESHGATE_METRICS_TOKEN set, only for `Authorization: Bearer <token>` (401 otherwise).

`startup` and `shutdown` run in the gateway's lifespan: this worker's metrics are written
for the others every second, and traces are started when OTEL_EXPORTER_OTLP_ENDPOINT is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from typing import Any

import orjson
from django.conf import settings
from django.db import connection

from audit.writer import writer
from connections.dbguard import DatabaseUnavailable, lookup
from meshsite.lib import redis as redis_client
from meshsite.lib.metrics import CONTENT_TYPE, REGISTRY

from . import metrics

logger = logging.getLogger(__name__)

PATHS = ("/metrics", "/healthz", "/readyz")
READY_CACHE_SECONDS = 0.5
READY_TIMEOUT_SECONDS = 2.0
STUCK_SECONDS = 30.0
DEPARTMENTS_SECONDS = 60.0
NOSNIFF = (b"x-content-type-options", b"nosniff")


class OpsApp:
    def __init__(self) -> None:
        self._ready: tuple[float, int, dict[str, str]] | None = None
        self._checking: asyncio.Future[tuple[int, dict[str, str]]] | None = None
        self._redis: redis_client.Redis | None = None
        self._departments_at = 0.0
        self._flusher: asyncio.Task[None] | None = None
        self._selecting = False  # a readiness SELECT is in the database thread
        self._selected_at = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        if path == "/healthz":
            await _answer(send, 200, b'{"status":"ok"}')
        elif path == "/readyz":
            status, checks = await self.ready()
            await _answer(
                send,
                status,
                orjson.dumps(
                    {"status": "ok" if status == 200 else "unavailable", "checks": checks}
                ),
            )
        elif path == "/metrics":
            if not _authorized(scope):
                await _answer(
                    send,
                    401,
                    b'{"error":"a bearer token is required"}',
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            await self.refresh_departments()
            body = REGISTRY.render()
            await _answer(send, 200, body, content_type=CONTENT_TYPE.encode())
        else:
            await _answer(send, 404, b'{"error":"not found"}')

    # --- readiness --------------------------------------------------------------------------

    async def ready(self) -> tuple[int, dict[str, str]]:
        cached = self._ready
        if cached is not None and time.monotonic() - cached[0] < READY_CACHE_SECONDS:
            return cached[1], cached[2]
        if self._checking is None:  # one check at a time; concurrent probes share it
            self._checking = asyncio.ensure_future(self._check())
        checking = self._checking
        try:
            status, checks = await asyncio.shield(checking)
        finally:
            if self._checking is checking and checking.done():
                self._checking = None
        self._ready = (time.monotonic(), status, checks)
        return status, checks

    async def _check(self) -> tuple[int, dict[str, str]]:
        database, redis = await asyncio.gather(self._database(), self._redis_ping())
        usable, _depths = writer.health()
        checks = {
            "database": database,
            "redis": redis,
            "audit_writer": "ok" if usable else "unusable",
        }
        ok = all(value in ("ok", "not configured") for value in checks.values())
        return (200 if ok else 503), checks

    async def _database(self) -> str:
        # The last SELECT still stuck in the database thread: no pile-up behind it (for a
        # while: one that never reached the thread's function must not stick for ever).
        if self._selecting and time.monotonic() - self._selected_at < STUCK_SECONDS:
            return "unavailable"
        self._selecting, self._selected_at = True, time.monotonic()
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                await lookup(self._select_one)
        except (DatabaseUnavailable, TimeoutError):
            return "unavailable"  # `_select_one` clears the flag once it returns
        except Exception as exc:
            return f"failed ({type(exc).__name__})"
        return "ok"

    async def _redis_ping(self) -> str:
        if not settings.REDIS_URL:
            return "not configured"
        if self._redis is None:
            self._redis = redis_client.connect(
                settings.REDIS_URL,
                timeout=READY_TIMEOUT_SECONDS,
                connect_timeout=READY_TIMEOUT_SECONDS,
            )
        try:
            reply = await self._redis.execute("PING")
        except Exception:
            return "unavailable"
        return "ok" if reply in (b"PONG", "PONG") else "unexpected reply"

    def _select_one(self) -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        finally:
            self._selecting = False  # also when the probe stopped waiting for it

    # --- metrics ----------------------------------------------------------------------------

    async def refresh_departments(self) -> None:
        """The departments' names for `meshgate_department_info`, re-read once a minute."""
        if time.monotonic() - self._departments_at < DEPARTMENTS_SECONDS:
            return
        # If the database is away the last names known are served; calls do not need them.
        with contextlib.suppress(Exception):
            await lookup(metrics.load_departments)
            self._departments_at = time.monotonic()

    async def startup(self) -> None:
        REGISTRY.configure(settings.MESHGATE_METRICS_DIR)
        if REGISTRY.directory is not None:
            self._flusher = asyncio.ensure_future(self._flush_every_second())
        if settings.MESHGATE_TRACING:
            from meshsite.lib import tracing

            tracing.start("meshgate")

    async def shutdown(self) -> None:
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        with contextlib.suppress(OSError):
            REGISTRY.flush()
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
        if settings.MESHGATE_TRACING:
            from meshsite.lib import tracing

            await asyncio.get_running_loop().run_in_executor(None, tracing.stop)

    async def _flush_every_second(self) -> None:
        while True:
            try:
                REGISTRY.flush()
            except OSError as exc:
                logger.warning("metrics: cannot write %s (%s)", REGISTRY.directory, exc.strerror)
            await asyncio.sleep(REGISTRY.flush_seconds)


def _authorized(scope: dict[str, Any]) -> bool:
    token = settings.MESHGATE_METRICS_TOKEN
    if not token:
        return True
    for name, value in scope["headers"]:
        if name == b"authorization":
            return hmac.compare_digest(value, b"Bearer " + token.encode())
    return False


async def _answer(
    send: Any,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = b"application/json",
) -> None:
    head = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), NOSNIFF]
    head.extend(headers or [])
    head.append((b"cache-control", b"no-store"))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


ops_app = OpsApp()
