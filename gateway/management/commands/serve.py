"""`manage.py serve`: the gateway under uvicorn, plus the demo simulator and Celery when configured.

`make run` uses it, and so does production (the Dockerfile's command): `--workers N` runs N
uvicorn worker processes on one port, `--simulator-port 0 --no-celery` leaves out the demo
simulator and Celery (run `celery worker` and one `celery beat` as their own processes).
With several workers their metrics meet in MESHGATE_METRICS_DIR (`var/metrics` if unset),
emptied here before the workers start, so every worker's /metrics counts them all.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand

# How long a stopping gateway waits for calls in flight before it closes them.
GRACE_SECONDS = 30


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


class Command(BaseCommand):
    help = "Serve Meshgate (ASGI, uvicorn) with the provider simulator and, with Redis, Celery."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1)
        parser.add_argument(
            "--simulator-port",
            type=int,
            default=8001,
            help="Port of the provider simulator; 0 to not start it.",
        )
        parser.add_argument(
            "--no-celery", action="store_true", help="Do not start a Celery worker and beat."
        )

    def handle(self, *args, **options) -> None:
        children: list[subprocess.Popen] = []
        if options["workers"] > 1 or settings.MESHGATE_METRICS_DIR:
            self.stdout.write(f"Metrics of every worker meet in {metrics_directory()}")
        python = sys.executable
        if options["simulator_port"]:
            children.append(
                subprocess.Popen(
                    [
                        python,
                        "-m",
                        "simulator",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(options["simulator_port"]),
                    ]
                )
            )
            self.stdout.write(f"Provider simulator on http://127.0.0.1:{options['simulator_port']}")
        if settings.REDIS_URL and not options["no_celery"]:
            children.append(
                subprocess.Popen(
                    [
                        python,
                        "-m",
                        "celery",
                        "-A",
                        "meshsite",
                        "worker",
                        "--beat",
                        "--schedule",
                        str(settings.VAR_DIR / "celerybeat-schedule"),
                        "--loglevel",
                        "INFO",
                        "--concurrency",
                        "2",
                    ]
                )
            )
            self.stdout.write("Celery worker and beat started (Redis broker).")
        else:
            self.stdout.write("No REDIS_URL: Celery tasks run in-process (eager).")
        self.stdout.write(
            f"Meshgate on http://{options['host']}:{options['port']}/  "
            f"(admin: /admin/, playground: /playground/, API: /v1/)"
        )
        # uvicorn catches SIGTERM and SIGINT, drains in-flight calls (at most GRACE_SECONDS),
        # then restores the handlers it found and raises the signal again. With the default
        # SIGTERM handler back, that ended this process on the spot, before `finally`: the
        # simulator and Celery were left running. A handler of ours makes it an exit instead.
        previous = signal.signal(signal.SIGTERM, _exit_on_signal)
        try:
            uvicorn.run(
                "meshsite.asgi:application",
                host=options["host"],
                port=options["port"],
                workers=options["workers"],
                loop="uvloop",
                http="httptools",
                lifespan="on",
                access_log=False,
                proxy_headers=True,
                env_file=None,
                timeout_graceful_shutdown=GRACE_SECONDS,
            )
        except KeyboardInterrupt:  # SIGINT, raised again by uvicorn once it has drained
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            for child in children:
                child.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.kill()


def metrics_directory() -> Path:
    """The workers' shared metrics directory, emptied, and named in the environment the
    workers inherit (they read it in settings)."""
    directory = Path(settings.MESHGATE_METRICS_DIR or settings.VAR_DIR / "metrics")
    directory.mkdir(parents=True, exist_ok=True)
    for stale in [*directory.glob("*.json"), *directory.glob("*.tmp")]:
        stale.unlink(missing_ok=True)
    os.environ["MESHGATE_METRICS_DIR"] = str(directory)
    return directory
