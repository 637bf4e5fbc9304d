"""Streaming passes chunks on as they arrive: an upstream that spaces its chunks 200 ms apart
is seen spaced ~200 ms apart through a real Meshgate process, not buffered together.

The simulator's `drip-200` model-name convention sleeps 200 ms after each SSE frame. A gateway
that gathered the stream (or flushed it in blocks) would deliver consecutive content chunks
within a few milliseconds of each other, and each gap is asserted to lie in 120-400 ms.
"""

from __future__ import annotations

import itertools
import json
import time

import httpx
import openai
import pytest

from gateway.tests.test_e2e_support import make_gateway

DRIP_MS = 200
LOW, HIGH = 0.120, 0.400
TOKENS = 5  # content chunks per answer: about 1.6 s of stream with the role, end and usage frames

ADD_DRIP_MODEL = f"""
from decimal import Decimal
from guardian.shortcuts import assign_perm
from connections.models import LLM, Connection, Department
model = LLM.objects.create(
    connection=Connection.objects.get(slug="sim"), name="drip-{DRIP_MS}", kind="chat",
    approved=True, input_price=Decimal("1.00"), output_price=Decimal("2.00"),
)
assign_perm("connections.use_llm", Department.objects.get(cost_center="MKT-100").group, model)
"""


@pytest.fixture(scope="module")
def gateway(simulator, tmp_path_factory):
    gw = make_gateway(simulator, tmp_path_factory.mktemp("gw-spacing"))
    gw.run(ADD_DRIP_MODEL)
    gw.start()
    yield gw
    gw.stop()


def request_body() -> dict:
    return {
        "model": f"sim/drip-{DRIP_MS}",
        "messages": [{"role": "user", "content": "Tell me about the tides"}],
        "max_tokens": TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def assert_spaced(arrivals: list[float]) -> None:
    assert len(arrivals) == TOKENS, arrivals
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert all(LOW <= gap <= HIGH for gap in gaps), [f"{gap * 1000:.0f} ms" for gap in gaps]


def test_sse_content_chunks_arrive_as_the_upstream_sends_them(gateway):
    arrivals: list[float] = []
    texts: list[str] = []
    with (
        httpx.Client(timeout=20) as http,
        http.stream(
            "POST",
            gateway.url + "/chat/completions",
            json=request_body(),
            headers={"Authorization": f"Bearer {gateway.keys['alice']}"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line.removeprefix("data: "))
            content = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
            if content:
                arrivals.append(time.monotonic())
                texts.append(content)
    assert_spaced(arrivals)
    record = gateway.record(request_id, outcome_not="interrupted")
    assert record["outcome"] == "ok" and record["streamed"] == 1
    assert record["completion_tokens"] == len(texts)


def test_the_openai_sdk_stream_iterator_yields_each_chunk_as_it_arrives(gateway):
    client = openai.OpenAI(
        api_key=gateway.keys["alice"], base_url=gateway.url, max_retries=0, timeout=20
    )
    body = request_body()
    stream = client.chat.completions.create(
        model=body["model"],
        messages=body["messages"],
        max_tokens=TOKENS,
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals: list[float] = []
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
        if chunk.usage is not None:
            usage = chunk.usage
    assert_spaced(arrivals)
    assert usage is not None and usage.completion_tokens == TOKENS
