"""A key from `manage.py create_api_key`, used and revoked over real HTTP.

Real processes: the command runs as a subprocess (exit status and streams as a shell
sees them), Meshgate runs under uvicorn (the e2e support fixture), the `openai` SDK
calls `/v1/` with the key, and the same key revokes itself through `/api/keys/`.
"""

from __future__ import annotations

import subprocess
import time

import httpx
import openai

from gateway.tests.test_e2e_support import PYTHON, ROOT, gateway_fixture  # noqa: F401


def create_api_key(gateway, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "manage.py", "create_api_key", *args],
        cwd=ROOT,
        env=gateway.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_printed_key_works_with_the_sdk_and_the_api_until_revoked(gateway):
    done = create_api_key(
        gateway, "--user", "alice", "--department", "Marketing", "--purpose", "cli e2e"
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    key = done.stdout.strip()
    assert done.stdout == key + "\n" and key.startswith("mg-")

    client = openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0)
    assert "sim/gpt-4o" in {model.id for model in client.models.list()}

    api = f"http://127.0.0.1:{gateway.port}/api/keys/"
    headers = {"Authorization": f"Bearer {key}"}
    listing = httpx.get(api, headers=headers, timeout=10)
    assert listing.status_code == 200
    mine = [row for row in listing.json()["results"] if key.startswith(row["prefix"] + "-")]
    assert len(mine) == 1 and mine[0]["purpose"] == "cli e2e" and mine[0]["owner"] == "alice"
    assert key not in listing.text

    revoked = httpx.post(f"{api}{mine[0]['id']}/revoke/", headers=headers, timeout=10)
    assert revoked.status_code == 200 and revoked.json()["is_active"] is False
    deadline = time.monotonic() + 5
    while True:
        try:
            client.models.list()
        except openai.AuthenticationError:
            break
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.1)
    assert httpx.get(api, headers=headers, timeout=10).status_code == 401


def test_a_refused_request_exits_non_zero_with_the_reason_on_stderr(gateway):
    # One case as a real process; test_create_api_key.py covers the others in-process.
    done = create_api_key(gateway, "--user", "alice", "--department", "Finance", "--purpose", "p")
    assert done.returncode != 0
    assert done.stdout == ""
    assert "not a member" in done.stderr
