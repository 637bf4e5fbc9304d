"""What recording one call costs: the metrics ending, the call's log line, and both.

A micro-benchmark, no server: a finished chat `Call` as the pipeline leaves it (an
answering target, one upstream attempt, usage, cost, a department) is handed to
`gateway.metrics.observe` (and `gateway.calllog.log_call`, its line written to a
null handler as JSON) N times; prints the time per call. The same for
prometheus-client's own multiprocess mode (an mmap write and a lock per value), the
library this mechanism stands beside.

    .venv/bin/python bench/metrics_observe.py [--calls 200000]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meshsite.settings")

import django

django.setup()

from audit.outcome import Outcome  # noqa: E402
from connections.providers.base import ConnectionConfig, Usage  # noqa: E402
from gateway import calllog, metrics  # noqa: E402
from gateway.call import Call, Principal  # noqa: E402
from gateway.directory import Snapshot, Target  # noqa: E402
from gateway.router import Attempts  # noqa: E402
from meshsite.logfilters import JsonFormatter  # noqa: E402


def finished_call() -> Call:
    target = Target(
        llm_id=1, mesh_id="sim/gpt-4o", name="gpt-4o", kind="chat", connection_id=1,
        connection_slug="sim", payload_policy="full", input_price=Decimal("2.5"),
        output_price=Decimal("10"), cached_input_price=Decimal("1.25"), context_window=None,
        max_output_tokens=None, description="", created=0,
    )  # fmt: skip
    snapshot = Snapshot({}, {}, {}, {}, {1: ConnectionConfig(1, "sim", "openai_compatible", 1)})
    call = Call("req_0", "chat.completions", body={"model": "sim/gpt-4o", "messages": []})
    call.principal = Principal(1, "alice", 3, 7, "mg-abcd1234", "bench")
    call.snapshot, call.targets, call.target = snapshot, [target], target
    call.attempts = Attempts()
    call.attempts.add(target, 200, time.monotonic() - 0.05)
    call.usage = Usage(prompt_tokens=42, completion_tokens=128)
    call.cost = Decimal("0.0013850000")
    call.end(Outcome.OK, 200)
    return call


def per_call(function, call: Call, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        function(call)
    return (time.perf_counter() - started) / calls * 1e6


def prometheus_client_multiprocess(calls: int) -> float:
    """The same updates through prometheus-client's multiprocess mode (its own process)."""
    import subprocess

    code = f"""
import os, time
from prometheus_client import Counter, Histogram
r = Counter("r", "", ["door", "operation", "model", "provider", "department", "outcome", "status"])
d = Histogram("d", "", ["door", "operation", "model", "provider", "outcome"])
u = Histogram("u", "", ["operation", "model", "provider", "status"])
t = Histogram("t", "", ["operation", "model", "provider", "token_type"])
k = Counter("k", "", ["model", "provider", "department", "token_type"])
c = Counter("c", "", ["model", "provider", "department"])
started = time.perf_counter()
for _ in range({calls}):
    r.labels("openai", "chat", "sim/gpt-4o", "openai_compatible", "3", "ok", "200").inc()
    d.labels("openai", "chat", "sim/gpt-4o", "openai_compatible", "ok").observe(0.05)
    u.labels("chat", "sim/gpt-4o", "openai_compatible", "200").observe(0.05)
    t.labels("chat", "sim/gpt-4o", "openai_compatible", "input").observe(42)
    k.labels("sim/gpt-4o", "openai_compatible", "3", "input").inc(42)
    t.labels("chat", "sim/gpt-4o", "openai_compatible", "output").observe(128)
    k.labels("sim/gpt-4o", "openai_compatible", "3", "output").inc(128)
    c.labels("sim/gpt-4o", "openai_compatible", "3").inc(0.001385)
print((time.perf_counter() - started) / {calls} * 1e6)
"""
    with tempfile.TemporaryDirectory() as directory:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": directory}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    calls = parser.parse_args().calls
    call = finished_call()
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    handler.setFormatter(JsonFormatter())
    calllog.logger.handlers[:] = [handler]
    calllog.logger.propagate = False
    calllog.logger.setLevel(logging.INFO)
    report("metrics.observe", per_call(metrics.observe, call, calls))
    report("calllog.log_call (a JSON line)", per_call(calllog.log_call, call, calls))
    calllog.logger.setLevel(logging.WARNING)
    report("calllog.log_call (above INFO: off)", per_call(calllog.log_call, call, calls))
    report("prometheus-client multiprocess", prometheus_client_multiprocess(calls))


def report(what: str, micros: float) -> None:
    print(f"{what:<40} {micros:7.2f} µs/call")


if __name__ == "__main__":
    main()
