"""What each API door adds beside plain chat completions, at concurrency 1 (issue 19).

Starts the provider simulator and Meshgate (one uvicorn worker, as `bench/overhead.py`
does, SQLite by default or `--variant postgres`), then sends the same short prompt, plain
and streamed, through each door in turn: `/v1/chat/completions` (the baseline),
`/v1/completions`, `/v1/messages` and `/v1/responses` (stored, the API's default). The
doors take turns within each round so that drift on a busy machine hits them alike; the
table gives each door's median p50 over the rounds and its difference from chat's
(the target: within 0.3 ms). A request that fails or ends early is counted.

    .venv/bin/python bench/doors.py [--requests 300] [--rounds 3] [--variant sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead

PROMPT = "Say something short about the sea"
DOORS = ("chat", "completions", "messages", "responses")


def request_of(door: str, key: str, stream: bool) -> tuple[bytes, bytes]:
    """The raw HTTP request a client of `door` sends, and the bytes its answer ends with."""
    model = "sim/gpt-4o-mini"
    auth = f"Authorization: Bearer {key}"
    if door == "chat":
        path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}]}
        body["max_tokens"] = 24
    elif door == "completions":
        path, body = "/v1/completions", {"prompt": PROMPT, "max_tokens": 24}
    elif door == "messages":
        path, auth = "/v1/messages", f"x-api-key: {key}"
        body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 24}
    else:
        path, body = "/v1/responses", {"input": PROMPT, "max_output_tokens": 24}
    body["model"] = model
    if stream:
        body["stream"] = True
        if door in ("chat", "completions"):
            body["stream_options"] = {"include_usage": True}
    payload = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    if not stream:
        expect = b"}"
    elif door in ("chat", "completions"):
        expect = b"[DONE]\n\n"
    elif door == "messages":
        expect = b'"message_stop"}\n\n'
    else:
        expect = b"}}\n\n"
    return head.encode() + payload, expect


def loadgen_main(args: list[str]) -> None:
    port, key, door, stream, total = args
    request, expect = request_of(door, key, stream == "1")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(overhead._load(int(port), request, int(total), 1, expect))
    print(json.dumps(result))


def run_load(port: int, key: str, door: str, stream: bool, total: int) -> dict:
    out = subprocess.run(
        [PYTHON, __file__, "--loadgen", str(port), key, door, "1" if stream else "0", str(total)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout)


PYTHON = sys.executable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per door and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", default="sqlite", choices=("sqlite", "postgres"))
    args = parser.parse_args()

    simulator, sim_port = overhead.start_simulator()
    results: dict[tuple[str, bool], list[dict]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env, key = overhead.prepare_variant(args.variant, Path(tmp), sim_port)
            gateway, port = overhead.start_meshgate(env)
            try:
                for door in DOORS:  # warm: each door's first call imports and connects
                    for stream in (False, True):
                        run_load(port, key, door, stream, 20)
                for _ in range(args.rounds):
                    for stream in (False, True):
                        for door in DOORS:
                            found = run_load(port, key, door, stream, args.requests)
                            results.setdefault((door, stream), []).append(found)
            finally:
                gateway.terminate()
                gateway.wait(timeout=30)
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)
    print_table(results, args.variant)


def print_table(results: dict[tuple[str, bool], list[dict]], variant: str) -> None:
    print(f"variant {variant}, concurrency 1, median over rounds")
    header = (
        f"{'door':12} {'mode':6} | {'rps':>6} {'p50':>8} {'p99':>8} | "
        f"{'vs chat p50':>11} {'fail':>4}"
    )
    print(header)
    print("-" * len(header))
    for stream in (False, True):
        base = statistics.median(r["p50"] for r in results["chat", stream])
        for door in DOORS:
            rounds = results[door, stream]
            p50 = statistics.median(r["p50"] for r in rounds)
            p99 = statistics.median(r["p99"] for r in rounds)
            rps = statistics.median(r["rps"] for r in rounds)
            fails = sum(r["failures"] for r in rounds)
            print(
                f"{door:12} {'stream' if stream else 'plain':6} | {rps:>6.0f} {p50:>6.2f}ms "
                f"{p99:>6.2f}ms | {p50 - base:>+9.2f}ms {fails:>4}"
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--loadgen":
        loadgen_main(sys.argv[2:])
    else:
        main()
