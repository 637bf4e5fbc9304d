"""Every door of `/v1` that takes a Meshgate key, against a real uvicorn worker and the SDK.

A real public id with a wrong, truncated or padded secret, a revoked or expired key and a key
whose owner was deactivated all get the same 401 body at every door, and each refused call
keeps its record. The good key opens each door (so a 401 means the key, not the door).
"""

from __future__ import annotations

import httpx
import openai
import pytest

from gateway.tests.test_e2e_support import gateway_fixture  # noqa: F401

UNAUTHORIZED = {
    "error": {
        "message": "Invalid or missing API key. Send 'Authorization: Bearer mg-...'.",
        "type": "authentication_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
CHAT = {"model": "sim/gpt-4o", "messages": [{"role": "user", "content": "x"}]}
DOORS = {
    "chat": ("POST", "/chat/completions", CHAT),
    "embeddings": ("POST", "/embeddings", {"model": "sim/text-embedding-3-small", "input": "x"}),
    "classifications": ("POST", "/classifications", {"model": "sim/gpt-4o", "input": "x"}),
    "summaries": ("POST", "/summaries", {"model": "sim/gpt-4o", "input": "x"}),
    "models": ("GET", "/models", None),
    "model": ("GET", "/models/sim/gpt-4o", None),
}


def forged(raw: str) -> str:
    head, _, secret = raw.rpartition("-")
    return f"{head}-{'B' if secret[0] != 'B' else 'C'}{secret[1:]}"


def bad_keys(keys: dict[str, str]) -> dict[str, str]:
    alice = keys["alice"]
    public_id = alice.rpartition("-")[0]
    return {
        "forged secret": forged(alice),
        "another key's secret": f"{public_id}-{keys['alice2'].rpartition('-')[2]}",
        "truncated": alice[:-1],
        "padded": alice + "A",
        "public id alone": public_id,
        "revoked": keys["revoked"],
        "expired": keys["expired"],
        "owner deactivated": keys["inactive"],
    }


def knock(gateway, door: str, raw: str) -> httpx.Response:
    method, path, body = DOORS[door]
    return httpx.request(
        method,
        gateway.url + path,
        json=body,
        headers={"Authorization": f"Bearer {raw}"},
        timeout=10,
    )


@pytest.mark.parametrize("door", list(DOORS))
def test_each_door_refuses_every_wrong_key_with_the_same_401(gateway, door):
    assert knock(gateway, door, gateway.keys["alice"]).status_code != 401
    for label, raw in bad_keys(gateway.keys).items():
        response = knock(gateway, door, raw)
        assert response.status_code == 401, f"{door}: {label}"
        assert response.json() == UNAUTHORIZED, f"{door}: {label}"
        record = gateway.record(response.headers["x-request-id"])
        assert record["outcome"] == "unauthorized" and record["user_id"] is None, label
        assert record["api_key_id"] is None and raw not in str(record), label


def test_the_sdk_is_refused_a_forged_secret_and_served_the_real_one(gateway):
    base = {"base_url": gateway.url, "max_retries": 0, "timeout": 10}
    good = openai.OpenAI(api_key=gateway.keys["alice"], **base)
    assert good.chat.completions.create(**CHAT).choices[0].message.content
    bad = openai.OpenAI(api_key=forged(gateway.keys["alice"]), **base)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(**CHAT)
    with pytest.raises(openai.AuthenticationError):
        bad.embeddings.create(model="sim/text-embedding-3-small", input="x")
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.AuthenticationError):
        bad.models.retrieve("sim/gpt-4o")
