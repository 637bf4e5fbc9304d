"""What the gateway does with a difficult upstream, through a real Meshgate process."""

from __future__ import annotations

import json
import time

import httpx

from connections.tests.upstreams import RawUpstream, chat_answer
from gateway.tests.test_e2e_support import gateway_fixture, post  # noqa: F401

MESSAGES = [{"role": "user", "content": "Hello"}]


def test_a_retry_after_longer_than_the_budget_is_answered_at_once(gateway, simulator):
    simulator.reset()
    simulator.script("retry-model", [{"status": 429, "retry_after": 3600}])
    started = time.monotonic()
    response = post(gateway, {"model": "retrying/retry-model", "messages": MESSAGES})
    elapsed = time.monotonic() - started
    assert response.status_code == 429
    assert elapsed < 2.0  # not max_retries x a capped wait: the client is not held
    assert response.headers["retry-after"] == "3600"
    assert response.json()["error"]["code"] == "rate_limited"
    assert len(simulator.requests()) == 1  # no retry the provider asked us not to make
    record = gateway.record(response.headers["x-request-id"], outcome_not="interrupted")
    assert [a["status"] for a in json.loads(record["attempts"])] == [429]


def test_every_v1_answer_says_nosniff(gateway):
    headers = {"Authorization": f"Bearer {gateway.keys['alice']}"}
    answers = [
        post(gateway, {"model": "sim/gpt-4o", "messages": MESSAGES}),
        post(gateway, {"model": "sim/gpt-4o"}),  # 400
        httpx.get(gateway.url + "/models", headers=headers),
        httpx.get(gateway.url + "/models"),  # 401
        httpx.get(gateway.url + "/nowhere"),  # 404
    ]
    with httpx.stream(
        "POST",
        gateway.url + "/chat/completions",
        json={"model": "sim/gpt-4o", "messages": MESSAGES, "stream": True},
        headers=headers,
        timeout=30,
    ) as streamed:
        streamed.read()
        answers.append(streamed)
    assert [a.status_code for a in answers] == [200, 400, 200, 401, 404, 200]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff", answer.request.url


ADD_CONNECTION = """
from decimal import Decimal
from django.contrib.auth.models import Group
from guardian.shortcuts import assign_perm
from connections.models import LLM, Connection
conn = Connection(name={slug!r}, slug={slug!r}, kind="openai_compatible", base_url={url!r},
                  timeout_seconds=10, max_retries={retries})
conn.set_secrets({{"api_key": "raw-upstream-key-not-real"}})
conn.save()
model = LLM.objects.create(connection=conn, name="raw-model", kind="chat", approved=True,
                           input_price=Decimal("1"), output_price=Decimal("2"))
assign_perm("connections.use_llm", Group.objects.get(name="Marketing"), model)
"""


def add_connection(gw, slug: str, url: str, *, retries: int = 0) -> str:
    """A connection to `url` with one model the cast's Alice may use, once the gateway sees it."""
    gw.run(ADD_CONNECTION.format(slug=slug, url=url, retries=retries))
    model = f"{slug}/raw-model"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        listed = httpx.get(
            gw.url + "/models", headers={"Authorization": f"Bearer {gw.keys['alice']}"}
        ).json()
        if any(item["id"] == model for item in listed["data"]):
            return model
        time.sleep(0.2)
    raise AssertionError(f"{model} never became visible")


def test_every_request_that_reached_the_provider_is_an_attempt_in_the_trail(gateway):
    # Each kept-alive connection carries one answer; the next request on it is read, then the
    # upstream hangs up without a byte of answer (as a server closing idle connections may).
    upstream = RawUpstream(lambda request, nth: chat_answer() if nth == 0 else None)
    try:
        model = add_connection(gateway, "hangup", upstream.base_url, retries=2)
        request_ids = []
        for _ in range(3):
            response = post(gateway, {"model": model, "messages": MESSAGES})
            assert response.status_code == 200, response.text
            request_ids.append(response.headers["x-request-id"])
    finally:
        upstream.close()
    attempts = [
        json.loads(gateway.record(rid, outcome_not="interrupted")["attempts"])
        for rid in request_ids
    ]
    assert len(upstream.requests) == sum(len(a) for a in attempts) == 5
    assert [[a["status"] for a in call] for call in attempts] == [[200], [502, 200], [502, 200]]
    assert attempts[1][0]["error"] == "upstream_connection_closed"


def peak_memory_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_an_endless_sse_line_is_stopped_at_the_limit_with_flat_memory(gateway):
    total = 32 * 1024 * 1024  # one line, no newline: the default limit is 4 MiB

    def huge_line(request, nth):
        yield b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
        piece = b"x" * 65536
        yield b"data: {" + piece
        for _ in range(total // len(piece)):
            yield piece

    upstream = RawUpstream(huge_line)
    worker = gateway.processes[0].pid
    try:
        model = add_connection(gateway, "endless", upstream.base_url)
        before = peak_memory_kib(worker)
        started = time.monotonic()
        with httpx.stream(
            "POST",
            gateway.url + "/chat/completions",
            json={"model": model, "messages": MESSAGES, "stream": True},
            headers={"Authorization": f"Bearer {gateway.keys['alice']}"},
            timeout=60,
        ) as response:
            events = [line for line in response.iter_lines() if line]
            request_id = response.headers["x-request-id"]
        elapsed = time.monotonic() - started
        growth = peak_memory_kib(worker) - before
        deadline = time.monotonic() + 5
        while not upstream.aborted and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        upstream.close()
    assert response.status_code == 200
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["code"] == "upstream_event_too_large"
    assert "data: [DONE]" not in events
    assert upstream.aborted == 1 and upstream.sent < total // 2  # its connection was closed
    assert growth < 24 * 1024, f"the worker's peak memory grew by {growth} KiB"
    assert elapsed < 5
    record = gateway.record(request_id, outcome_not="interrupted")
    assert record["outcome"] == "upstream_error"
    assert "stream event over" in record["error_message"]
