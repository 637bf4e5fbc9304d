"""`manage.py serve --workers N`, the production command: N workers on one port, whose
metrics meet in one directory that serve empties before they start."""

from __future__ import annotations

import signal
import subprocess
import time

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from .test_e2e_support import PYTHON, ROOT, free_port, make_gateway


def test_serve_runs_n_workers_whose_metrics_meet_in_an_emptied_directory(simulator, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # What a previous run left: counts that must not be served as this run's.
    (metrics_dir / "999-dead.json").write_text(
        '{"meshgate_requests": [[["openai", "chat", "sim/gpt-4o", "openai_compatible", "1",'
        ' "ok", "200"], 1000.0]]}'
    )
    gateway = make_gateway(simulator, tmp_path, MESHGATE_METRICS_DIR=str(metrics_dir))
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    serve = subprocess.Popen(
        [
            PYTHON,
            "manage.py",
            "serve",
            "--port",
            str(port),
            "--workers",
            "2",
            "--simulator-port",
            "0",
            "--no-celery",
        ],
        cwd=ROOT,
        env=gateway.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            workers = list(metrics_dir.glob("*.json"))
            if len(workers) == 2 and not (metrics_dir / "999-dead.json").exists():
                break
            time.sleep(0.3)
        assert sorted(p.name for p in metrics_dir.glob("*.json")) != ["999-dead.json"]
        assert len(list(metrics_dir.glob("*.json"))) == 2, "two workers, one file each"
        while time.monotonic() < deadline:  # both workers' startup done: the port answers
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)

        client = openai.OpenAI(
            api_key=gateway.keys["alice"], base_url=f"http://127.0.0.1:{port}/v1", max_retries=0
        )
        for _ in range(3):
            client.chat.completions.create(
                model="sim/gpt-4o", messages=[{"role": "user", "content": "Hello"}]
            )
        deadline = time.monotonic() + 10
        while True:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            calls = sum(
                s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "meshgate_requests_total" and s.labels["outcome"] == "ok"
            )
            if calls >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert calls == 3  # this run's calls only, not the stale 1000
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=40)
        except subprocess.TimeoutExpired:
            serve.kill()
