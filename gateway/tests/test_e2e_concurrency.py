"""One uvicorn worker serves 200 concurrent streams to an upstream answering in 1 s each."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

import httpx

from gateway.tests.test_e2e_support import gateway_fixture  # noqa: F401

CONCURRENT = 200


async def one_stream(port: int, path: str, key: str) -> tuple[bool, bool, str]:
    """A streamed call on a bare asyncio connection: a client light enough not to be the bottleneck
    (httpx needs more CPU for 200 streams than the gateway does)."""
    body = json.dumps(
        {"model": "slow-1000", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    ).encode()
    if path.startswith("/v1/chat") and key.startswith("mg-"):
        body = body.replace(b'"slow-1000"', b'"sim/slow-1000"')
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    data = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        data += chunk
    writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    request_id = ""
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"x-request-id:"):
            request_id = line.split(b":", 1)[1].strip().decode()
    return head.startswith(b"HTTP/1.1 200"), b"data: [DONE]" in rest, request_id


async def run_batch(port: int, path: str, key: str) -> list[tuple[bool, bool, str]]:
    return await asyncio.gather(*(one_stream(port, path, key) for _ in range(CONCURRENT)))


def timed(port: int, path: str, key: str) -> tuple[float, list[tuple[bool, bool, str]]]:
    started = time.monotonic()
    results = asyncio.run(run_batch(port, path, key))
    return time.monotonic() - started, results


def test_200_concurrent_streams_complete_in_a_small_multiple_of_the_upstream_time(
    gateway, simulator
):
    key = gateway.keys["alice"]
    # Load the key and catalog caches once, as a running worker has them.
    assert httpx.get(gateway.url + "/models", headers={"Authorization": f"Bearer {key}"}).is_success
    direct, _ = timed(urlsplit(simulator.url).port, "/v1/chat/completions", simulator.api_key)
    elapsed, results = timed(gateway.port, "/v1/chat/completions", key)
    assert all(ok and done for ok, done, _ in results), results[:3]
    # Serialised, this would take 200 s; concurrent, a little over 1 s. Generous for a busy CI box.
    assert elapsed < 10, (elapsed, direct)
    ids = {request_id for _, _, request_id in results}
    assert len(ids) == CONCURRENT
    quoted = ", ".join(f"'{request_id}'" for request_id in ids)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = gateway.records(f"request_id IN ({quoted}) AND outcome = 'ok'")
        if len(rows) == CONCURRENT:
            break
        time.sleep(0.1)
    assert len(rows) == CONCURRENT
    print(f"200 streams: direct {direct:.2f}s, through Meshgate {elapsed:.2f}s")
