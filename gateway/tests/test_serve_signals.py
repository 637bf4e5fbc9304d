"""`manage.py serve` stops what it started, on SIGTERM (systemd, docker, kill) and SIGINT alike.

Before, SIGTERM ended the command inside uvicorn (which re-raises the signal it caught with the
default handler back in place), so its `finally` never ran: the simulator and the Celery worker
and beat kept running, and a restart started a second beat.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .test_e2e_support import PYTHON, ROOT, free_port, make_gateway


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_the_simulator_and_celery_it_started(simulator, tmp_path, signum):
    gateway = make_gateway(simulator, tmp_path)
    port, sim_port = free_port(), free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    serve = subprocess.Popen(
        [PYTHON, "manage.py", "serve", "--port", str(port), "--simulator-port", str(sim_port)],
        cwd=ROOT,
        env=gateway.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        children: set[int] = set()
        while time.monotonic() < deadline:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                up = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code
            except httpx.HTTPError:
                up = 0
            children = descendants(serve.pid)
            # The gateway, the simulator and Celery (its worker forks pool processes too).
            if up and answers(sim_port) and len(children) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("serve did not start: " + (tmp_path / "serve.log").read_text()[-3000:])
        time.sleep(1)  # let Celery fork its pool, so those processes are checked too
        children = descendants(serve.pid)

        os.kill(serve.pid, signum)
        serve.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(alive(pid) for pid in children):
            time.sleep(0.2)
        left = sorted(pid for pid in children if alive(pid))
        assert not left, f"serve left {left} running after {signum.name}"
        assert not answers(sim_port)
    finally:
        if serve.poll() is None:
            serve.kill()
        for pid in descendants(serve.pid) | children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
