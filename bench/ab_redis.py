"""A/B: quotas' Redis client, home-made (`lean`) against redis-py's asyncio client with hiredis
(`redis-py`), through the whole gateway (`make bench-ab-redis`, issue 17).

`make bench-peers` conditions for its `meshgate-postgres` target: one uvicorn worker (uvloop,
httptools) per client, PostgreSQL + Redis, full payload audit, three quotas every call matches
(department, user, API key) and a rate limit per key, department and LLM (none refuses), the
provider simulator upstream, wrk (`-t1 -cN`, a warm-up before each row). Both gateways run at
once on the same database and Redis, each with `MESHGATE_REDIS_CLIENT` set to its client; the
rows alternate A, B, A, B ... for `--rounds` rounds, so a change in the machine's load falls on
both. Per client and concurrency: median requests/s, p50 and p99 over the rounds, the worker's
CPU per request, and each round's figures. The rule (issue 17): keep the home-made client only
if the library costs more than 10% of requests/s at concurrency 16.

    .venv/bin/python bench/ab_redis.py [--rounds 3] [--seconds 6] [--concurrency 16,64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead  # bench/ is not a package: imported from beside this file
import peers
from peers_proc import cpu_seconds

PG_URL = os.environ.get(
    "BENCH_AB_REDIS_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/bench_ab_redis"
)
REDIS_URL = os.environ.get("BENCH_AB_REDIS_URL", "redis://127.0.0.1:6379/13")
CLIENTS = ("lean", "redis-py")
THRESHOLD = 0.10  # the library may cost at most this share of requests/s at concurrency 16


def start(client: str, env: dict[str, str]) -> peers.Target:
    process, port = overhead.start_meshgate({**env, "MESHGATE_REDIS_CLIENT": client})
    return peers.Target(client, port, "", "sim/gpt-4o-mini", process)


def one_row(target: peers.Target, key: str, stream: bool, concurrency: int, args) -> dict:
    target.key = key
    script = peers.lua_script(target, stream)  # no response() callback: env is None
    peers.wrk(target, script, concurrency, args.warmup)
    pids = target.pids()
    before = cpu_seconds(pids)
    result = peers.wrk(target, script, concurrency, args.seconds)
    result["cpu_ms"] = (cpu_seconds(pids) - before) * 1000 / max(result["requests"], 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--concurrency", default="16,64")
    parser.add_argument("--stream", action="store_true", help="streamed rows too")
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",") if c]
    modes = (False, True) if args.stream else (False,)

    peers.ensure_wrk()
    peers.WORK.mkdir(parents=True, exist_ok=True)
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()  # this benchmark's own db
    load_before = os.getloadavg()
    started = time.monotonic()
    sim_process, sim_port = overhead.start_simulator()
    runs: dict[tuple[str, bool, int], list[dict]] = {}
    targets: list[peers.Target] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env, key = overhead.prepare_variant(
                "postgres-quotas", Path(tmp), sim_port, pg_url=PG_URL, redis_url=REDIS_URL
            )
            targets = [start(client, env) for client in CLIENTS]
            for round_ in range(args.rounds):
                for stream in modes:
                    for concurrency in concurrencies:
                        # A, B in one round; B, A in the next: neither always goes first.
                        order = targets if round_ % 2 == 0 else targets[::-1]
                        for target in order:
                            result = one_row(target, key, stream, concurrency, args)
                            runs.setdefault((target.name, stream, concurrency), []).append(result)
                            print(
                                f"round {round_ + 1} {target.name:8} "
                                f"{'stream' if stream else 'plain':6} c{concurrency:<3} "
                                f"{result['rps']:7.0f} rps  p50 {result['p50_us'] / 1000:5.1f} ms"
                                f"  p99 {result['p99_us'] / 1000:5.1f} ms  "
                                f"cpu {result['cpu_ms']:.2f} ms/req  errors {result['errors']}",
                                flush=True,
                            )
            for target in targets:
                peers.stop(target.process)
            ok, total = overhead.django_run(overhead.COUNT, env).split()
    finally:
        for target in targets:
            peers.stop(target.process)
        peers.stop(sim_process)
    answered = sum(t.completed for t in targets)
    print()
    print(
        f"{args.rounds} rounds, {args.seconds:g} s per row after {args.warmup:g} s warm-up, "
        f"{(time.monotonic() - started) / 60:.1f} min; load average before "
        f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (2 cores, shared)"
    )
    from redis.utils import HIREDIS_AVAILABLE

    print(f"redis-py {redis.__version__}, hiredis parser: {HIREDIS_AVAILABLE}")
    print(f"audit: {answered:,} answers to wrk (warm-ups included), {total} records, {ok} ok")
    print()
    print("| client | mode | conc | req/s (median) | p50 ms | p99 ms | CPU ms/req | each round |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    medians: dict[tuple[str, bool, int], float] = {}
    for (client, stream, concurrency), results in sorted(runs.items(), key=lambda i: i[0][1:]):
        rps = statistics.median(r["rps"] for r in results)
        medians[client, stream, concurrency] = rps
        print(
            f"| {client} | {'stream' if stream else 'plain'} | {concurrency} | {rps:,.0f} | "
            f"{statistics.median(r['p50_us'] for r in results) / 1000:.1f} | "
            f"{statistics.median(r['p99_us'] for r in results) / 1000:.1f} | "
            f"{statistics.median(r['cpu_ms'] for r in results):.2f} | "
            + ", ".join(f"{r['rps']:,.0f}" for r in results)
            + " |"
        )
    print()
    for stream in modes:
        for concurrency in concurrencies:
            lean, library = (
                medians["lean", stream, concurrency],
                medians["redis-py", stream, concurrency],
            )
            cost = (lean - library) / lean
            print(
                f"{'stream' if stream else 'plain'} c{concurrency}: redis-py at "
                f"{library / lean:.1%} of lean's requests/s (costs {cost:+.1%})"
            )
    lean, library = medians["lean", False, 16], medians.get(("redis-py", False, 16), 0.0)
    if 16 in concurrencies:
        keep = (lean - library) / lean > THRESHOLD
        print(
            "decision (plain, c16): "
            + ("keep the home-made client" if keep else "switch to redis-py")
        )


if __name__ == "__main__":
    main()
