"""The benchmark's targets (`bench/peers.py`): installing what a run needs (wrk, LiteLLM's
proxy in its own virtual environment), starting each target behind one worker on 127.0.0.1,
and stopping it."""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import overhead  # bench/ is not a package: imported from beside this file
from peers_proc import process_tree

ROOT = overhead.ROOT
PYTHON = overhead.PYTHON
SIM_KEY = overhead.SIM_KEY
LITELLM_VERSION = "1.106.12"  # 1.108+ wants litellm-proxy, which PyPI does not serve
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
WORK = ROOT / "bench" / ".work" / "peers"
PG_URL = os.environ.get(
    "BENCH_PEERS_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/bench_peers"
)
REDIS_URL = os.environ.get("BENCH_PEERS_REDIS_URL", "redis://127.0.0.1:6379/12")
VARIANTS = {"meshgate-embedded": "sqlite", "meshgate-postgres": "postgres-quotas"}


# --- installing what the run needs ----------------------------------------------------------


def ensure_wrk() -> str:
    if not shutil.which("wrk"):
        print("wrk is missing: apt-get install -y wrk", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        installed = subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, timeout=300)
        if installed.returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, timeout=300, check=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, timeout=300)
    path = shutil.which("wrk")
    if not path:
        raise SystemExit("bench-peers: wrk is not installed and apt-get could not install it")
    return path


def ensure_litellm() -> Path:
    """LiteLLM's proxy, pinned, in its own virtual environment (installed once)."""
    stamp = LITELLM_VENV / ".installed"
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists() and stamp.exists() and stamp.read_text().strip() == LITELLM_VERSION:
        return binary
    print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV}", flush=True)
    if not (LITELLM_VENV / "bin" / "python").exists():
        subprocess.run([PYTHON, "-m", "venv", str(LITELLM_VENV)], check=True, timeout=120)
    pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, f"litellm[proxy]=={LITELLM_VERSION}"], check=True, timeout=1200)
    stamp.write_text(LITELLM_VERSION + "\n")
    return binary


# --- processes and what they cost -------------------------------------------------------------


@dataclasses.dataclass
class Target:
    name: str
    port: int
    key: str
    model: str
    process: subprocess.Popen | None = None
    env: dict[str, str] | None = None  # Meshgate's, to count its records
    # What wrk finished against this target, for the audit count.
    completed: int = 0
    non_2xx: int = 0
    socket_errors: int = 0
    in_flight_at_stop: int = 0
    probed: int = 0

    def ids_file(self) -> Path:
        return WORK / f"{self.name}-request-ids.txt"

    def pids(self) -> set[int]:
        return process_tree(self.process.pid) if self.process else set()


def start_litellm(binary: Path, sim_port: int) -> Target:
    master_key = "sk-" + "bench-" + secrets.token_hex(12)  # built here, never committed
    config = WORK / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: http://127.0.0.1:{sim_port}/v1\n"
        f"      api_key: {SIM_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  set_verbose: false\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n"
    )
    port = overhead.free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "VIRTUAL_ENV", "PYTHONPATH"}
    }
    # Offline, quiet and in production mode, as its production checklist advises.
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        LITELLM_LOG="ERROR",
        LITELLM_MODE="PRODUCTION",
        NO_DOCS="True",
    )
    log = open(WORK / "litellm.log", "wb")  # noqa: SIM115 (the process holds it)
    process = subprocess.Popen(
        [
            str(binary),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
            "--telemetry",
            "False",
        ],
        cwd=WORK,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    overhead.wait_http(port, "/health/liveliness", seconds=180)
    return Target("litellm", port, master_key, "gpt-4o-mini", process)


def start_meshgate(name: str, workdir: Path, sim_port: int) -> Target:
    variant = VARIANTS[name]
    if variant.startswith("postgres"):
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()  # db 12 is this benchmark's own
    env, key = overhead.prepare_variant(
        variant, workdir, sim_port, pg_url=PG_URL, redis_url=REDIS_URL
    )
    process, port = overhead.start_meshgate(env)
    return Target(name, port, key, "sim/gpt-4o-mini", process, env)


def stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
