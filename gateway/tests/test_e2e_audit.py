"""The audit trail is never lost: every exit path of a real Meshgate process leaves its record."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import threading
import time

import httpx

from gateway.tests.test_e2e_support import gateway_fixture  # noqa: F401

MESSAGES = [{"role": "user", "content": "Hello"}]


def headers(gw, key="alice"):
    return {"Authorization": f"Bearer {gw.keys[key]}"}


def raw_stream_request(
    port: int, key: str, model: str, *, stream: bool = True, messages=MESSAGES
) -> socket.socket:
    """Open a call (streamed by default) on a raw socket, so the test can hang up whenever
    it likes."""
    body = json.dumps({"model": model, "messages": messages, "stream": stream}).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data


def request_id_of(head: bytes) -> str:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"x-request-id:"):
            return line.split(b":", 1)[1].strip().decode()
    raise AssertionError(head)


def test_a_client_disconnecting_mid_stream_is_recorded_with_partial_usage(gateway):
    sock = raw_stream_request(gateway.port, gateway.keys["alice"], "sim/drip-300")
    head = read_until(sock, b"data: {")
    data = head
    while data.count(b"data: {") < 3:
        data += sock.recv(4096)
    sock.close()
    request_id = request_id_of(head)
    record = gateway.record(request_id, outcome_not="interrupted")
    assert record["outcome"] == "client_disconnected"
    assert record["streamed"] == 1
    assert record["completion_tokens"] > 0 and record["tokens_estimated"] == 1
    assert float(record["cost"]) > 0
    # The stream would have dripped for many seconds more: the upstream call was cancelled.
    assert record["latency_ms"] < 5000
    assert json.loads(record["response_body"])["partial"] is True


def test_a_client_leaving_a_plain_call_cancels_it_and_is_recorded(gateway):
    """No answer can reach a client that left: the upstream call is cancelled, not run to
    its end and recorded as answered."""
    marker = f"leaving {time.time_ns()}"
    sock = raw_stream_request(
        gateway.port,
        gateway.keys["alice"],
        "sim/slow-1000",  # the simulator answers after a second
        stream=False,
        messages=[{"role": "user", "content": marker}],
    )
    time.sleep(0.3)
    sock.close()
    deadline = time.monotonic() + 5
    while True:
        rows = gateway.records(f"CAST(request_body AS TEXT) LIKE '%{marker}%'")
        if (rows and rows[0]["outcome"] != "interrupted") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert rows, "no record"
    record = rows[0]
    assert record["outcome"] == "client_disconnected" and record["status_code"] == 499
    assert record["latency_ms"] < 900  # ended when the client left, not when the answer came


def test_our_own_exception_answers_500_with_the_request_id_and_completes_the_record(gateway):
    response = httpx.post(
        gateway.url + "/chat/completions",
        json={"model": "misconfigured/gpt-4o-mini", "messages": MESSAGES},
        headers=headers(gateway),
    )
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert response.json()["error"]["code"] == "internal_error"
    assert request_id in response.json()["error"]["message"]
    record = gateway.record(request_id, outcome_not="interrupted")
    assert record["outcome"] == "internal_error" and record["status_code"] == 500


def test_refused_calls_are_recorded_in_one_write(gateway):
    response = httpx.post(
        gateway.url + "/chat/completions",
        json={"model": "sim/gpt-4o", "messages": MESSAGES},
        headers=headers(gateway, "bob"),
    )
    assert response.status_code == 404
    record = gateway.record(response.headers["x-request-id"])
    assert record["outcome"] == "not_found"
    assert record["ended_at"] is not None and record["department_id"] is not None


def test_the_payload_policy_of_the_connection_applies_to_the_record(gateway):
    text = "Mail jane.doe@example.com, card 4111 1111 1111 1111, call +44 20 7946 0958"
    redacted = httpx.post(
        gateway.url + "/chat/completions",
        json={"model": "private/gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
        headers=headers(gateway),
    )
    metadata = httpx.post(
        gateway.url + "/chat/completions",
        json={"model": "quiet/gpt-4o-mini", "messages": [{"role": "user", "content": text}]},
        headers=headers(gateway),
    )
    assert redacted.status_code == metadata.status_code == 200
    kept = gateway.record(redacted.headers["x-request-id"], outcome_not="interrupted")
    assert "jane.doe" not in kept["request_body"] and "4111" not in kept["request_body"]
    assert "[EMAIL]" in kept["request_body"] and "[CARD]" in kept["request_body"]
    assert "[PHONE]" in kept["request_body"]
    assert kept["response_body"]
    bare = gateway.record(metadata.headers["x-request-id"], outcome_not="interrupted")
    assert bare["request_body"] is None and bare["response_body"] is None
    assert bare["prompt_tokens"] > 0


def test_a_keys_last_use_is_written_off_the_request_path(gateway):
    httpx.post(
        gateway.url + "/embeddings",
        json={"model": "sim/text-embedding-3-small", "input": "x"},
        headers=headers(gateway, "bob"),
    )
    db = sqlite3.connect(gateway.env["DATABASE_URL"].removeprefix("sqlite:///"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        row = db.execute(
            "SELECT last_used_at FROM gateway_apikey WHERE purpose = 'e2e tests' AND owner_id = "
            "(SELECT id FROM auth_user WHERE username = 'bob')"
        ).fetchone()
        if row[0]:
            break
        time.sleep(0.05)
    db.close()
    assert row[0]


def test_when_the_record_cannot_be_written_the_call_is_refused_with_503(gateway, simulator):
    # Warm the caches: the call below then needs the database only for its record.
    assert (
        httpx.post(
            gateway.url + "/chat/completions",
            json={"model": "sim/gpt-4o", "messages": MESSAGES},
            headers=headers(gateway),
        ).status_code
        == 200
    )
    db = sqlite3.connect(gateway.env["DATABASE_URL"].removeprefix("sqlite:///"))
    db.execute("ALTER TABLE audit_callrecord RENAME TO audit_callrecord_away")
    db.commit()
    simulator.reset()
    try:
        response = httpx.post(
            gateway.url + "/chat/completions",
            json={"model": "sim/gpt-4o", "messages": MESSAGES},
            headers=headers(gateway),
        )
        streamed = httpx.post(
            gateway.url + "/chat/completions",
            json={"model": "sim/gpt-4o", "messages": MESSAGES, "stream": True},
            headers=headers(gateway),
        )
    finally:
        db.execute("ALTER TABLE audit_callrecord_away RENAME TO audit_callrecord")
        db.commit()
        db.close()
    assert response.status_code == streamed.status_code == 503
    assert response.json()["error"]["code"] == "audit_unavailable"
    assert simulator.requests() == []
    # And once the database is back, calls go through again.
    again = httpx.post(
        gateway.url + "/chat/completions",
        json={"model": "sim/gpt-4o", "messages": MESSAGES},
        headers=headers(gateway),
    )
    assert again.status_code == 200


def test_a_call_made_while_another_process_holds_the_write_lock_waits_for_it(gateway):
    """The loop writes its records itself, but never waits for SQLite's lock on the loop:
    the writer thread waits instead, and other calls go on meanwhile."""
    db = sqlite3.connect(gateway.env["DATABASE_URL"].removeprefix("sqlite:///"), timeout=10)
    db.isolation_level = None
    db.execute("BEGIN IMMEDIATE")  # another writer (the admin, a Celery task) holds the lock
    answers = []
    call = threading.Thread(
        target=lambda: answers.append(
            httpx.post(
                gateway.url + "/chat/completions",
                json={"model": "sim/gpt-4o", "messages": MESSAGES},
                headers=headers(gateway),
                timeout=30,
            )
        )
    )
    try:
        call.start()
        time.sleep(0.5)
        assert answers == []  # its record waits for the lock...
        started = time.monotonic()
        models = httpx.get(gateway.url + "/models", headers=headers(gateway), timeout=5)
        assert models.status_code == 200  # ...while the loop serves other calls
        assert time.monotonic() - started < 1
    finally:
        db.execute("COMMIT")
        db.close()
        call.join(timeout=30)
    assert answers[0].status_code == 200
    record = gateway.record(answers[0].headers["x-request-id"])
    assert record["outcome"] == "ok"


def test_a_gateway_killed_mid_call_leaves_an_interrupted_record(gateway):
    process, port = gateway.start()
    sock = raw_stream_request(port, gateway.keys["alice"], "sim/drip-300")
    head = read_until(sock, b"data: {")
    request_id = request_id_of(head)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    sock.close()
    record = gateway.record(request_id)
    assert record["outcome"] == "interrupted"
    assert record["ended_at"] is None
    assert record["user_id"] is not None and record["model_requested"] == "sim/drip-300"
