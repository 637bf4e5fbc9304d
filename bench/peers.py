"""Meshgate beside LiteLLM's proxy on this machine, with wrk (`make bench-peers`, issue 9).

Targets, all on 127.0.0.1, each behind one worker, against the provider simulator:
- `simulator`: the upstream alone (what every gateway adds to);
- `litellm`: LiteLLM's proxy from PyPI (pinned, in bench/.venv-litellm), offline
  (LITELLM_LOCAL_MODEL_COST_MAP), one model pointing at the simulator, a master key, no database;
- `meshgate-embedded`: Meshgate's default, SQLite and the local-memory cache;
- `meshgate-postgres`: PostgreSQL (`bench_peers`) + Redis (db 12), full payload audit, three
  quotas every call matches and a rate limit per key, department and LLM (none refuses).

For each, plain and streamed chat completions at concurrency 1, 16 and 64 (`wrk -t1 -cN
--latency -s <lua>`, after a warm-up): requests/s, p50, p99, errors (non-2xx and socket
errors), the server's CPU per request (utime+stime from /proc, its process tree; the
simulator's and, for Meshgate, PostgreSQL's and Redis' beside it) and the worker's RSS. A
raw-socket probe measures time to first byte of streamed answers (200 sequential requests).
Every Meshgate request must leave its audit record: the x-request-id of every answer wrk and
the probe got is looked up among the variant's records, and the counts are printed side by
side. A memory phase sends `--memory-requests` (100,000) to the PostgreSQL variant three times
and reads the worker's RSS after each. The results, the ratios Meshgate / LiteLLM and the
issue's targets go to bench/RESULTS.md.

    .venv/bin/python bench/peers.py [--quick] [--memory-requests N] [--targets a,b]

Beside it: `peers_targets.py` (installing wrk and LiteLLM, starting and stopping targets),
`peers_proc.py` (CPU and memory from /proc), `peers_report.py` (the tables, RESULTS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead  # bench/ is not a package: imported from beside this file
from peers_proc import cpu_seconds, processes_named, rss_mb
from peers_report import Row, render, row_line, versions
from peers_targets import (
    WORK,
    Target,
    ensure_litellm,
    ensure_wrk,
    start_litellm,
    start_meshgate,
    stop,
)

ROOT = overhead.ROOT
PYTHON = overhead.PYTHON
SIM_KEY = overhead.SIM_KEY
RESULTS = ROOT / "bench" / "RESULTS.md"
LAST_RUN = WORK / "last-run.json"
RUN_ARGS = ("seconds", "warmup", "probe", "memory_requests", "memory_seconds")
CONCURRENCIES = (1, 16, 64)
TARGETS = ("simulator", "litellm", "meshgate-embedded", "meshgate-postgres")
PROMPT = [{"role": "user", "content": "Say something short about the sea"}]


# --- load -----------------------------------------------------------------------------------


def request_body(model: str, stream: bool) -> dict:
    body = {"model": model, "messages": PROMPT, "max_tokens": 24}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.body = [==[{body}]==]
{response}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
  {save_ids}
end
"""

# Against Meshgate, every answer's x-request-id is kept (to find each one's audit record), and
# the memory phase stops after a number of answers. A response() callback costs wrk a little,
# so the simulator and LiteLLM rows run without one.
RESPONSE = """
threads = {{}}
function setup(thread) table.insert(threads, thread) end
ids, answers, limit = {{}}, 0, {limit}
function response(status, headers, body)
  answers = answers + 1
  local id = "-"
  for name, value in pairs(headers) do
    if string.lower(name) == "x-request-id" then id = value end
  end
  ids[answers] = id
  if limit > 0 and answers == limit then
    io.open("{reached}", "w"):close()
    wrk.thread:stop()
  end
end
"""
SAVE_IDS = """
  local out = assert(io.open("{path}", "a"))
  for _, thread in ipairs(threads) do
    for _, id in ipairs(thread:get("ids")) do out:write(id, "\\n") end
  end
  out:close()
"""


def lua_script(target: Target, stream: bool, limit: int = 0) -> Path:
    body = json.dumps(request_body(target.model, stream), separators=(",", ":"))
    response = save_ids = ""
    if target.env is not None:
        response = RESPONSE.format(limit=limit, reached=WORK / "limit-reached")
        save_ids = SAVE_IDS.format(path=target.ids_file())
    path = WORK / f"{target.name}-{'stream' if stream else 'plain'}-{limit}.lua"
    path.write_text(LUA.format(key=target.key, body=body, response=response, save_ids=save_ids))
    return path


def wrk(target: Target, script: Path, concurrency: int, seconds: float) -> dict:
    command = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        f"http://127.0.0.1:{target.port}/v1/chat/completions",
    ]
    reached = WORK / "limit-reached"
    reached.unlink(missing_ok=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + seconds + 60
    while process.poll() is None:
        if reached.exists():
            # wrk sleeps out its whole duration even once its thread stopped; SIGINT ends the
            # sleep, and it still reports (and runs done()).
            process.send_signal(signal.SIGINT)
            reached.unlink()
        if time.monotonic() > deadline:
            process.kill()
        time.sleep(0.1)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.strip()}")
    line = next(line for line in stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    sockets = result["connect"] + result["read"] + result["write"] + result["timeout"]
    result["socket_errors"] = sockets
    result["errors"] = sockets + result["status"]
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    target.completed += result["requests"]
    target.non_2xx += result["status"]
    target.socket_errors += sockets
    target.in_flight_at_stop += concurrency
    return result


def measure(target: Target, sim: Target, stream: bool, concurrency: int, args) -> Row:
    script = lua_script(target, stream)
    wrk(target, script, concurrency, args.warmup)
    server = target.pids()
    upstream = sim.pids()
    shared = target.name == "meshgate-postgres"
    database = processes_named("postgres") | processes_named("redis-server") if shared else set()
    before = cpu_seconds(server), cpu_seconds(upstream), cpu_seconds(database)
    result = wrk(target, script, concurrency, args.seconds)
    after = cpu_seconds(server), cpu_seconds(upstream), cpu_seconds(database)
    n = max(result["requests"], 1)
    per_request = [(b - a) * 1000 / n for a, b in zip(before, after, strict=True)]
    return Row(
        target=target.name,
        stream=stream,
        concurrency=concurrency,
        rps=result["rps"],
        p50=result["p50_us"] / 1000,
        p99=result["p99_us"] / 1000,
        errors=result["errors"],
        requests=result["requests"],
        cpu_ms=per_request[0],
        sim_cpu_ms=per_request[1],
        db_cpu_ms=per_request[2] if shared else None,
        rss=rss_mb(server),
    )


def ttfb_probe(target: Target, count: int, gap_ms: float = 0.0) -> dict:
    """Sequential streamed requests on one keep-alive socket: time to the first SSE event.

    With `gap_ms`, the probe keeps one core busy for that long before each request: the
    simulator then sees requests spaced as it sees them through a gateway that spends
    that long on each, one core busy meanwhile. (Measured here: its first byte takes
    ~0.11 ms back to back, ~0.3 ms 1.5 ms apart; a process woken from an idle wait
    answers later.)"""
    body = json.dumps(request_body(target.model, True)).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {target.key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    firsts, totals, failures = [], [], 0
    sock = None
    for _ in range(count):
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", target.port), timeout=10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if gap_ms:
            until = time.perf_counter() + gap_ms / 1000
            while time.perf_counter() < until:
                pass
        started = time.perf_counter()
        sock.sendall(request)
        data, first = b"", None
        while not _answer_complete(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if first is None and b"data:" in data.partition(b"\r\n\r\n")[2]:
                first = time.perf_counter() - started
        total = time.perf_counter() - started
        target.probed += 1
        if first is None or not data.startswith(b"HTTP/1.1 200") or b"data: [DONE]" not in data:
            failures += 1
            sock.close()
            sock = None
            continue
        firsts.append(first * 1000)
        totals.append(total * 1000)
        if target.env is not None:
            with target.ids_file().open("a") as out:
                out.write(_request_id(data) + "\n")
    if sock is not None:
        sock.close()
    return {
        "ttfb_ms": statistics.median(firsts) if firsts else float("nan"),
        "total_ms": statistics.median(totals) if totals else float("nan"),
        "failures": failures,
        "count": count,
    }


def _request_id(data: bytes) -> str:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"x-request-id:"):
            return line.split(b":", 1)[1].strip().decode()
    return "-"


def _answer_complete(data: bytes) -> bool:
    head, found, rest = data.partition(b"\r\n\r\n")
    if not found:
        return False
    headers = head.lower()
    if b"transfer-encoding: chunked" in headers:
        return rest.endswith(b"\r\n0\r\n\r\n") or rest == b"0\r\n\r\n"
    for line in headers.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(rest) >= int(line.split(b":", 1)[1])
    return False


def memory_phase(target: Target, args) -> list[tuple[int, float, float, int]]:
    """Three runs of `--memory-requests` plain requests (c=16).

    Each gives (requests, seconds, worker RSS, requests the worker has answered since it started).
    """
    script = lua_script(target, False, limit=args.memory_requests)
    runs = []
    for _ in range(3):
        started = time.monotonic()
        result = wrk(target, script, 16, args.memory_seconds)
        served = target.completed + target.probed
        runs.append((result["requests"], time.monotonic() - started, rss_mb(target.pids()), served))
        print(
            f"  memory: {result['requests']:,} requests in {runs[-1][1]:.0f} s, "
            f"{result['errors']} errors, worker RSS {runs[-1][2]:.1f} MB after {served:,}",
            flush=True,
        )
    return runs


# Which answered request ids have no audit record, and the records by outcome.
COUNT = r"""
import django, json, os
django.setup()
from django.db.models import Count
from audit.models import CallRecord
answered = set(open(os.environ["BENCH_IDS"]).read().split())
recorded = set(CallRecord.objects.values_list("request_id", flat=True))
outcomes = dict(CallRecord.objects.values_list("outcome").annotate(n=Count("id")))
missing = sorted(answered - recorded)
print(json.dumps({"answered": len(answered), "missing": len(missing), "sample": missing[:5],
                  "outcomes": outcomes}))
"""


def audit_check(target: Target) -> tuple[str, bool]:
    """Each answer's request id against the records; the server must be stopped (writer drained).

    wrk stops with requests in flight (at most its connection count per run): those reached
    Meshgate and have records (often client_disconnected) that no answer names.
    """
    ids = target.ids_file()
    answers = len(ids.read_text().split()) if ids.exists() else 0
    env = {**target.env, "BENCH_IDS": str(ids)}
    found = json.loads(overhead.django_run(COUNT, env).splitlines()[-1])
    outcomes = found["outcomes"]
    total = sum(outcomes.values())
    expected = target.completed + target.probed
    good = found["missing"] == 0 and answers == expected == found["answered"]
    others = ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items()) if k != "ok") or "none"
    line = (
        f"{target.name}: {expected:,} requests answered ({target.completed:,} to wrk, "
        f"{target.probed:,} to the probe; {target.non_2xx:,} non-2xx, {target.socket_errors:,} "
        f"socket errors), {found['answered']:,} distinct request ids, {found['missing']:,} "
        f"without an audit record; {total:,} records: ok {outcomes.get('ok', 0):,}, other: "
        f"{others} (up to {target.in_flight_at_stop:,} were in flight when wrk stopped)"
    )
    if not good:
        line = f"!!! AUDIT MISMATCH !!! {line}; e.g. {found['sample']}"
    return line, good


# --- the run --------------------------------------------------------------------------------


def save_run(run: dict) -> None:
    """The run's figures, so the report can be written again (`--rerender`) without a new run."""
    data = {
        **run,
        "rows": [dataclasses.asdict(row) for row in run["rows"]],
        "args": {k: v for k, v in vars(run["args"]).items() if k in RUN_ARGS},
    }
    LAST_RUN.write_text(json.dumps(data, indent=1))


def load_run() -> dict:
    data = json.loads(LAST_RUN.read_text())
    data["rows"] = [Row(**row) for row in data["rows"]]
    data["args"] = argparse.Namespace(**data["args"])
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--seconds", type=float, help="measured seconds per row (6; quick 3)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per row (2; quick 1)")
    parser.add_argument("--probe", type=int, help="streamed requests for the TTFB probe (200)")
    parser.add_argument(
        "--memory-requests", type=int, help="requests per memory run (100000; quick 2000)"
    )
    parser.add_argument(
        "--memory-seconds", type=float, default=200, help="time cap per memory run (200)"
    )
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--rerender", action="store_true", help="write the report again from the last run's data"
    )
    args = parser.parse_args()
    if args.rerender:
        args.output.write_text(render(**load_run()))
        print(f"wrote {args.output} from {LAST_RUN}")
        return
    args.seconds = args.seconds or (3 if args.quick else 6)
    args.warmup = args.warmup or (1 if args.quick else 2)
    args.probe = args.probe or (50 if args.quick else 200)
    args.memory_requests = args.memory_requests or (2000 if args.quick else 100_000)
    names = [n for n in args.targets.split(",") if n]
    unknown = set(names) - set(TARGETS)
    if unknown:
        raise SystemExit(f"unknown targets: {', '.join(sorted(unknown))}")

    started, load_before = time.monotonic(), os.getloadavg()[0]
    ensure_wrk()
    litellm = ensure_litellm() if "litellm" in names else None
    WORK.mkdir(parents=True, exist_ok=True)
    command = "make bench-peers" + (" BENCH_ARGS='" + " ".join(sys.argv[1:]) + "'") * (
        len(sys.argv) > 1
    )
    rows: list[Row] = []
    probes: dict[str, dict] = {}
    audits: list[tuple[str, bool]] = []
    memory: list[tuple[int, float, float]] = []
    sim_process, sim_port = overhead.start_simulator()
    sim = Target("simulator", sim_port, SIM_KEY, "gpt-4o-mini", sim_process)
    try:
        for name in names:
            print(f"== {name}", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                if name == "simulator":
                    target = sim
                elif name == "litellm":
                    target = start_litellm(litellm, sim_port)
                else:
                    target = start_meshgate(name, Path(tmp), sim_port)
                    target.ids_file().unlink(missing_ok=True)
                try:
                    for stream in (False, True):
                        for concurrency in CONCURRENCIES:
                            row = measure(target, sim, stream, concurrency, args)
                            rows.append(row)
                            print("  " + row_line(row), flush=True)
                    probes[name] = ttfb_probe(target, args.probe)
                    print(f"  TTFB probe: {probes[name]}", flush=True)
                    if target is not sim and "simulator" in probes:
                        # The upstream as this gateway paces it: one request per its cycle.
                        gap = max(0.0, probes[name]["total_ms"] - probes["simulator"]["total_ms"])
                        paced = ttfb_probe(sim, args.probe, gap_ms=gap)
                        probes[name]["paced_simulator_ttfb_ms"] = paced["ttfb_ms"]
                        probes[name]["paced_gap_ms"] = gap
                        print(f"  simulator paced alike ({gap:.2f} ms apart): {paced}", flush=True)
                    if name == "meshgate-postgres":
                        memory = memory_phase(target, args)
                finally:
                    if target is not sim:
                        time.sleep(1)  # the last records are in the audit writer's queue
                        stop(target.process)
                if target.env is not None:
                    audits.append(audit_check(target))
                    print(audits[-1][0], flush=True)
    finally:
        stop(sim_process)
        for script in WORK.glob("*.lua"):
            script.unlink()  # they hold the run's keys
        for ids in WORK.glob("*-request-ids.txt"):
            ids.unlink()
    elapsed = time.monotonic() - started
    # Anything else running on the machine skews every figure: say how busy it was.
    load = (load_before, os.getloadavg()[0])
    run = {
        "rows": rows,
        "probes": probes,
        "audits": audits,
        "memory": memory,
        "found": versions(litellm),
        "command": command,
        "elapsed": elapsed,
        "load": load,
        "args": args,
    }
    save_run(run)
    args.output.write_text(render(**run))
    print(f"\nwrote {args.output} ({elapsed / 60:.1f} min)")
    if not all(good for _, good in audits):
        print("!!! AUDIT MISMATCH: some Meshgate requests have no record (see above) !!!")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
