"""Operations on a real Meshgate process: traces to an OTLP receiver, /metrics, logs, health.

The gateway runs under uvicorn (`test_e2e_support`) with OTEL_EXPORTER_OTLP_ENDPOINT
pointing at an OTLP/HTTP receiver this test runs on loopback (it decodes the protobuf
with opentelemetry-proto); calls go through the real openai SDK, a W3C `traceparent` in
`extra_headers`, to the provider simulator, which logs the headers it received.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from gateway.tests.test_e2e_support import make_gateway

TOKEN = "metrics-test-token"
PROMPT = "What is the capital of France? (a prompt no log may show)"


class Receiver:
    """An OTLP/HTTP trace receiver: every span it was sent, decoded."""

    def __init__(self) -> None:
        self.spans: list = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    for resource in request.resource_spans:
                        for scope in resource.scope_spans:
                            receiver.spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id: bytes, count: int, wait: float = 15.0) -> list:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self.lock:
                found = [span for span in self.spans if span.trace_id == trace_id]
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{len(found)} spans of the trace arrived, not {count}")


@pytest.fixture(scope="module")
def receiver():
    found = Receiver()
    yield found
    found.server.shutdown()


@pytest.fixture(scope="module")
def gateway(simulator, receiver, tmp_path_factory):
    gw = make_gateway(
        simulator,
        tmp_path_factory.mktemp("gw-ops"),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_SERVICE_NAME="meshgate-test",
        MESHGATE_METRICS_TOKEN=TOKEN,
        MESHGATE_LOG_FORMAT="json",
        MESHGATE_LOG_LEVEL="INFO",
        MESHGATE_CALL_LOG="true",
    )
    gw.start()
    yield gw
    gw.stop()


def client(gw, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(api_key=key or gw.keys["alice"], base_url=gw.url, max_retries=0)


def scrape(gw, token: str | None = TOKEN) -> dict[str, list]:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"http://127.0.0.1:{gw.port}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def total(samples: list, name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_a_client_traceparent_is_the_parent_of_the_call_span_and_reaches_the_provider(
    gateway, receiver, simulator
):
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    traceparent = f"00-{trace_id}-{parent_id}-01"
    response = client(gateway).chat.completions.with_raw_response.create(
        model="sim/gpt-4o",
        messages=[{"role": "user", "content": "Hello"}],
        extra_headers={"traceparent": traceparent},
    )
    request_id = response.headers["x-request-id"]

    spans = receiver.trace(bytes.fromhex(trace_id), 4)
    (call,) = [s for s in spans if s.parent_span_id == bytes.fromhex(parent_id)]
    assert call.name == "chat sim/gpt-4o"
    assert call.kind == call.SPAN_KIND_SERVER
    attributes = {a.key: a.value for a in call.attributes}
    assert attributes["meshgate.request_id"].string_value == request_id
    assert attributes["gen_ai.operation.name"].string_value == "chat"
    assert attributes["gen_ai.response.model"].string_value == "sim/gpt-4o"
    assert attributes["gen_ai.usage.input_tokens"].int_value > 0
    assert attributes["gen_ai.usage.output_tokens"].int_value > 0
    children = {s.name: s for s in spans if s.parent_span_id == call.span_id}
    assert {"admission", "audit write", "chat sim/gpt-4o"} <= set(children)
    attempt = children["chat sim/gpt-4o"]
    assert attempt.kind == attempt.SPAN_KIND_CLIENT
    assert call.start_time_unix_nano <= attempt.start_time_unix_nano
    assert attempt.end_time_unix_nano <= call.end_time_unix_nano

    # The provider got the trace on: the call's span as its parent.
    sent = [
        r
        for r in simulator.requests()
        if r["headers"].get("traceparent", "").startswith(f"00-{trace_id}-")
    ]
    assert sent, "the provider received no traceparent of this trace"
    assert sent[-1]["headers"]["traceparent"] == f"00-{trace_id}-{call.span_id.hex()}-01"


def test_a_refused_call_is_traced_too(gateway, receiver):
    trace_id, parent_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "mg-not-a-key").chat.completions.create(
            model="sim/gpt-4o",
            messages=[{"role": "user", "content": "Hello"}],
            extra_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
    (call,) = receiver.trace(bytes.fromhex(trace_id), 1)
    assert call.parent_span_id == bytes.fromhex(parent_id)
    assert call.status.code == call.status.STATUS_CODE_ERROR
    attributes = {a.key: a.value for a in call.attributes}
    assert attributes["http.response.status_code"].int_value == 401


def test_metrics_need_the_token(gateway):
    url = f"http://127.0.0.1:{gateway.port}/metrics"
    assert httpx.get(url, timeout=10).status_code == 401
    wrong = httpx.get(url, headers={"authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401
    assert "www-authenticate" in wrong.headers
    assert (
        httpx.get(url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10).status_code == 200
    )


def test_metrics_count_calls_tokens_cost_and_refusals(gateway):
    before = scrape(gateway)
    ok = total(before.get("meshgate_requests", []), "meshgate_requests_total", outcome="ok")
    denied = total(
        before.get("meshgate_requests", []), "meshgate_requests_total", outcome="unauthorized"
    )
    usage = []
    for _ in range(3):
        answer = client(gateway).chat.completions.create(
            model="sim/gpt-4o", messages=[{"role": "user", "content": "Hello"}]
        )
        usage.append(answer.usage)
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "mg-not-a-key").chat.completions.create(
            model="sim/gpt-4o", messages=[{"role": "user", "content": "Hello"}]
        )

    after = scrape(gateway)
    requests = after["meshgate_requests"]
    assert total(requests, "meshgate_requests_total", outcome="ok") == ok + 3
    assert total(requests, "meshgate_requests_total", outcome="unauthorized") == denied + 1
    # Labels are the catalog's: the model is the target's mesh id, the provider its kind.
    labelled = [
        s for s in requests if s.labels["outcome"] == "ok" and s.labels["model"] == "sim/gpt-4o"
    ]
    assert labelled and labelled[0].labels["provider"] == "openai_compatible"
    assert labelled[0].labels["operation"] == "chat" and labelled[0].labels["door"] == "openai"
    assert labelled[0].labels["department"]
    # No label holds a request id, a key or a user.
    for samples in after.values():
        for sample in samples:
            for value in sample.labels.values():
                assert not value.startswith(("req_", "mg-")) and value != "alice"

    def tokens(families, kind):
        return total(families["meshgate_tokens"], "meshgate_tokens_total", token_type=kind)

    sent_in = sum(u.prompt_tokens for u in usage)
    sent_out = sum(u.completion_tokens for u in usage)
    assert tokens(after, "input") - tokens(before, "input") == sent_in
    assert tokens(after, "output") - tokens(before, "output") == sent_out
    histogram = after["gen_ai_client_token_usage"]
    assert total(histogram, "gen_ai_client_token_usage_sum", token_type="input") >= sent_in
    assert total(after["meshgate_cost_usd"], "meshgate_cost_usd_total") > 0
    duration = after["gen_ai_server_request_duration_seconds"]
    assert total(duration, "gen_ai_server_request_duration_seconds_count", outcome="ok") >= 3
    upstream = after["gen_ai_client_operation_duration_seconds"]
    assert total(upstream, "gen_ai_client_operation_duration_seconds_count", status="200") >= 3
    # The departments' names, for dashboards: joined on the department label.
    info = after["meshgate_department_info"]
    assert {s.labels["department"] for s in info} >= {labelled[0].labels["department"]}


def test_a_streamed_call_records_its_time_to_first_token(gateway):
    before = scrape(gateway).get("gen_ai_server_time_to_first_token_seconds", [])
    stream = client(gateway).chat.completions.create(
        model="sim/gpt-4o", messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    name = "gen_ai_server_time_to_first_token_seconds_count"
    after = scrape(gateway)["gen_ai_server_time_to_first_token_seconds"]
    assert total(after, name, model="sim/gpt-4o") == total(before, name, model="sim/gpt-4o") + 1


def test_each_call_logs_one_json_line_without_its_body_or_key(gateway):
    key = gateway.keys["alice"]
    response = client(gateway).chat.completions.with_raw_response.create(
        model="sim/gpt-4o", messages=[{"role": "user", "content": PROMPT}]
    )
    request_id = response.headers["x-request-id"]
    log = gateway.workdir / f"uvicorn-{gateway.port}.log"
    deadline = time.monotonic() + 5
    lines: list[dict] = []
    while time.monotonic() < deadline and not lines:
        text = log.read_text()
        lines = [
            entry
            for line in text.splitlines()
            if line.startswith("{") and (entry := json.loads(line)).get("request_id") == request_id
        ]
        time.sleep(0.05)
    assert len(lines) == 1, lines
    (line,) = lines
    assert line["logger"] == "meshgate.calls" and line["level"] == "INFO"
    assert line["outcome"] == "ok" and line["status"] == 200 and line["door"] == "openai"
    assert line["model"] == "sim/gpt-4o" and line["endpoint"] == "chat.completions"
    assert line["prompt_tokens"] > 0 and line["completion_tokens"] > 0
    assert float(line["cost_usd"]) > 0 and line["latency_ms"] >= 0
    text = log.read_text()
    assert "capital of France" not in text
    assert key not in text and key[12:] not in text
    assert "sim-secret-key-not-real" not in text


def test_health_and_readiness(gateway):
    base = f"http://127.0.0.1:{gateway.port}"
    assert httpx.get(base + "/healthz", timeout=5).json() == {"status": "ok"}
    ready = httpx.get(base + "/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "audit_writer": "ok"}


def test_a_providers_429_is_not_counted_as_a_quota_refusal(gateway):
    def refusals() -> float:
        return total(
            scrape(gateway).get("meshgate_quota_refusals", []), "meshgate_quota_refusals_total"
        )

    def limited() -> float:
        requests = scrape(gateway)["meshgate_requests"]
        return total(requests, "meshgate_requests_total", outcome="rate_limited")

    before, limited_before = refusals(), limited()
    with pytest.raises(openai.RateLimitError):
        client(gateway).chat.completions.create(
            model="sim/limited-fail-429", messages=[{"role": "user", "content": "Hello"}]
        )
    assert limited() == limited_before + 1
    assert refusals() == before
    upstream = scrape(gateway)["gen_ai_client_operation_duration_seconds"]
    name = "gen_ai_client_operation_duration_seconds_count"
    assert total(upstream, name, model="sim/limited-fail-429", status="429") >= 1
