"""The doors' streams pass chunks on as they arrive, and a client that leaves mid-stream ends
the call (499) as on the OpenAI door: a real Meshgate process, the simulator's `drip-300`
model (300 ms between upstream chunks)."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.tests.test_e2e_support import gateway_fixture  # noqa: F401

MODEL = "sim/drip-300"
PROMPT = "Tell me about the tides"
DOORS = {
    "messages": (
        "/messages",
        {"max_tokens": 6, "messages": [{"role": "user", "content": PROMPT}]},
        "content_block_delta",
    ),
    "responses": (
        "/responses",
        {"input": PROMPT, "max_output_tokens": 6},
        "response.output_text.delta",
    ),
    "completions": ("/completions", {"prompt": PROMPT, "max_tokens": 6}, None),
}


def first_delta(lines, kind: str | None) -> None:
    for line in lines:
        if not line.startswith("data: {"):
            continue
        data = json.loads(line[6:])
        if kind is None and any(choice.get("text") for choice in data.get("choices") or ()):
            return
        if kind is not None and data.get("type") == kind:
            return
    raise AssertionError("no text arrived")


@pytest.mark.parametrize("door", sorted(DOORS))
def test_the_first_text_arrives_while_the_upstream_is_still_streaming(gateway, door):
    path, body, kind = DOORS[door]
    headers = {"Authorization": f"Bearer {gateway.keys['alice']}"}
    request = {**body, "model": MODEL, "stream": True}
    with (
        httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client,
        client.stream("POST", path, json=request) as response,
    ):
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        lines = response.iter_lines()
        first_delta(lines, kind)
        # Several upstream chunks, 300 ms apart, are still to come: the call is not over.
        assert gateway.record(request_id)["outcome"] == "interrupted"
        rest = list(lines)
    assert rest and gateway.record(request_id, outcome_not="interrupted")["outcome"] == "ok"


@pytest.mark.parametrize("door", sorted(DOORS))
def test_a_client_that_leaves_mid_stream_ends_the_call_and_pays_what_it_got(gateway, door):
    path, body, kind = DOORS[door]
    headers = (
        {"x-api-key": gateway.keys["alice"]}
        if door == "messages"
        else {"Authorization": f"Bearer {gateway.keys['alice']}"}
    )
    request = {**body, "model": MODEL, "stream": True}
    with (
        httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client,
        client.stream("POST", path, json=request) as response,
    ):
        request_id = response.headers["x-request-id"]
        first_delta(response.iter_lines(), kind)
    record = gateway.record(request_id, wait=10, outcome_not="interrupted")
    assert (record["outcome"], record["status_code"]) == ("client_disconnected", 499)
    assert record["endpoint"] == door
    assert record["completion_tokens"] > 0 and record["tokens_estimated"]
