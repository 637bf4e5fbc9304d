"""Home-made mechanisms against the libraries that do the same job (`make bench-ab`, issue 17).

For each mechanism, A (home-made) and B (the library) run through the whole gateway in
`make bench-peers` conditions: the `meshgate-postgres` variant (PostgreSQL, Redis, full
payload audit, three quotas and three rate limits every call matches), one uvicorn
worker per side, the provider simulator upstream, wrk at concurrency 16 (and 64), plain
and streamed chat completions (bench-peers' `measure`: warm-up, then wrk, CPU per
request from /proc). A and B run side by side on one database, measured in turn row
after row, the order flipped every round, `--rounds` times: a burst of load from
anything else on the machine falls on both sides alike, and the figure is the median
of each round's B / A. Every answer must have its audit
record (checked as bench-peers checks it). The medians per side and the ratio B / A go
to stdout and to bench/.work/ab/last-run.json.

- `http`: the upstream client, `meshsite.lib.http` lean (httptools) vs aiohttp's client
  (MESHGATE_HTTP_CLIENT=lean|aiohttp).
- `pg`: the audit writes on the event loop, `meshsite.lib.pgpipeline` libpq pipeline vs
  psycopg's AsyncConnection in pipeline mode (MESHGATE_AUDIT_PIPELINE=libpq|psycopg).

    .venv/bin/python bench/ab.py [--mechanisms http,pg] [--rounds 3] [--concurrency 16,64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overhead  # bench/ is not a package: imported from beside this file
import peers

MECHANISMS = {
    "http": ("MESHGATE_HTTP_CLIENT", "lean", "aiohttp"),
    "pg": ("MESHGATE_AUDIT_PIPELINE", "libpq", "psycopg"),
}
# Its own database and Redis db, so a bench-peers run elsewhere on the machine is not disturbed.
PG_URL = os.environ.get("BENCH_AB_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/bench_ab")
REDIS_URL = os.environ.get("BENCH_AB_REDIS_URL", "redis://127.0.0.1:6379/13")
WORK = peers.WORK.parent / "ab"


def start(name: str, env: dict, key: str) -> peers.Target:
    process, port = overhead.start_meshgate(env)
    target = peers.Target(name, port, key, "sim/gpt-4o-mini", process, env)
    target.ids_file().unlink(missing_ok=True)
    return target


def finish(target: peers.Target) -> None:
    """Stop the gateway, then check that every answer it gave has its audit record."""
    time.sleep(1)  # the last completions are in the audit writer's queue
    peers.stop(target.process)
    line, good = peers.audit_check(target)
    print("  " + line, flush=True)
    target.ids_file().unlink(missing_ok=True)
    if not good:
        raise SystemExit(line)


def ab(mechanism: str, sim: peers.Target, args) -> dict:
    """A and B side by side (two gateways, one database), measured in turn row by row, the
    order flipped every round: a burst of load elsewhere falls on both alike."""
    import redis

    switch, home, library = MECHANISMS[mechanism]
    redis.Redis.from_url(REDIS_URL).flushdb()
    rows: dict[str, list[peers.Row]] = {home: [], library: []}
    with tempfile.TemporaryDirectory() as tmp:
        env, key = overhead.prepare_variant(
            "postgres-quotas", Path(tmp), sim.port, pg_url=PG_URL, redis_url=REDIS_URL
        )
        targets = {side: start(f"{mechanism}-{side}", {**env, switch: side}, key) for side in rows}
        try:
            for round_ in range(args.rounds):
                for stream in (False, True):
                    for concurrency in args.concurrency:
                        order = (home, library) if round_ % 2 == 0 else (library, home)
                        for side in order:
                            row = peers.measure(targets[side], sim, stream, concurrency, args)
                            rows[side].append(row)
                            print(f"  {side:8} " + peers.row_line(row), flush=True)
        finally:
            for target in targets.values():
                finish(target)
    summary = {}
    for stream in (False, True):
        for concurrency in args.concurrency:
            cell: dict = {}
            mine = {
                side: [r for r in found if r.stream == stream and r.concurrency == concurrency]
                for side, found in rows.items()
            }
            for side, found in mine.items():
                cell[side] = {
                    "rps": statistics.median(r.rps for r in found),
                    "p50": statistics.median(r.p50 for r in found),
                    "p99": statistics.median(r.p99 for r in found),
                    "cpu_ms": statistics.median(r.cpu_ms for r in found),
                    "rps_runs": [round(r.rps) for r in found],
                }
            # Each round's B / A, measured seconds apart; their median is the figure.
            pairs = zip(mine[home], mine[library], strict=True)
            cell["ratio"] = statistics.median(b.rps / a.rps for a, b in pairs)
            cell["cpu_ratio"] = cell[library]["cpu_ms"] / cell[home]["cpu_ms"]
            summary[f"{'stream' if stream else 'plain'} c{concurrency}"] = cell
    return {"home": home, "library": library, "cells": summary}


def report(mechanism: str, found: dict) -> str:
    home, library = found["home"], found["library"]
    lines = [
        f"### {mechanism}: {home} (A) vs {library} (B)",
        "",
        f"| mode | {home} req/s | p50 | p99 | CPU ms/req | {library} req/s | p50 | p99 | "
        "CPU ms/req | B / A req/s (median of pairs) | B / A CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, cell in found["cells"].items():
        a, b = cell[home], cell[library]
        lines.append(
            f"| {mode} | {a['rps']:.0f} | {a['p50']:.1f} ms | {a['p99']:.1f} ms | "
            f"{a['cpu_ms']:.2f} | {b['rps']:.0f} | {b['p50']:.1f} ms | {b['p99']:.1f} ms | "
            f"{b['cpu_ms']:.2f} | {cell['ratio']:.2f} | {cell['cpu_ratio']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mechanisms", default="http,pg")
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs per mechanism (3)")
    parser.add_argument("--concurrency", default="16", help="comma-separated (16)")
    parser.add_argument("--seconds", type=float, default=6, help="measured seconds per row (6)")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up seconds per row (2)")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    names = [n for n in args.mechanisms.split(",") if n]
    peers.ensure_wrk()
    peers.WORK.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    results = {}
    sim_process, sim_port = overhead.start_simulator()
    sim = peers.Target("simulator", sim_port, overhead.SIM_KEY, "gpt-4o-mini", sim_process)
    try:
        for name in names:
            print(f"== {name}", flush=True)
            results[name] = ab(name, sim, args)
    finally:
        peers.stop(sim_process)
        for script in peers.WORK.glob("*.lua"):
            script.unlink()  # they hold the run's keys
    load = (load_before, os.getloadavg()[0])
    (WORK / "last-run.json").write_text(json.dumps({"results": results, "load": load}, indent=1))
    print()
    for name, found in results.items():
        print(report(name, found) + "\n")
    print(f"load average before/after: {load[0]:.2f} / {load[1]:.2f} (2 cores, shared)")


if __name__ == "__main__":
    main()
