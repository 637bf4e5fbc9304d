"""bench/RESULTS.md for `bench/peers.py`: the table, time to first byte, audit, memory, targets."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MESHGATE_TARGETS = ("meshgate-embedded", "meshgate-postgres")
# LiteLLM's proxy as issue 9 measured it on this machine kind: req/s (plain, streamed) by c.
REFERENCE = {16: (107, 53)}


@dataclass
class Row:
    target: str
    stream: bool
    concurrency: int
    rps: float
    p50: float
    p99: float
    errors: int
    requests: int
    cpu_ms: float
    sim_cpu_ms: float
    db_cpu_ms: float | None
    rss: float


def row_line(row: Row) -> str:
    db = f" pg+redis {row.db_cpu_ms:.2f} ms/req" if row.db_cpu_ms is not None else ""
    return (
        f"{'stream' if row.stream else 'plain':6} c={row.concurrency:<3} {row.rps:9.0f} req/s "
        f"p50 {row.p50:7.2f} ms p99 {row.p99:7.2f} ms errors {row.errors} "
        f"cpu {row.cpu_ms:.2f} ms/req (sim {row.sim_cpu_ms:.2f}){db} rss {row.rss:.0f} MB"
    )


def render(rows, probes, audits, memory, found, command, elapsed, load, args) -> str:
    by = {(r.target, r.stream, r.concurrency): r for r in rows}
    lines = [
        "# Meshgate beside LiteLLM's proxy",
        "",
        "Written by `bench/peers.py` (issue 9). One worker per server, an instant upstream (the "
        "provider simulator), `wrk -t1` on loopback; wrk, the servers, PostgreSQL and Redis all "
        "share the machine's cores, nothing pinned, so the ratios say more than the absolute "
        "figures.",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; the run took {elapsed / 60:.1f} min",
        f"- Machine: {machine()}; 1-minute load average {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end (above ~0.5, something else was running)",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in found.items()),
        f"- Command: `{command}` ({args.warmup:g} s warm-up and {args.seconds:g} s measured "
        f"per row)",
        "",
        "| target | mode | c | req/s | p50 ms | p99 ms | errors | server CPU ms/req | "
        "simulator CPU ms/req | PG+Redis CPU ms/req | RSS MB | req/s vs LiteLLM |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        peer = by.get(("litellm", r.stream, r.concurrency))
        ratio = f"{r.rps / peer.rps:.1f}x" if peer and r.target in MESHGATE_TARGETS else ""
        db = f"{r.db_cpu_ms:.2f}" if r.db_cpu_ms is not None else ""
        lines.append(
            f"| {r.target} | {'stream' if r.stream else 'plain'} | {r.concurrency} | "
            f"{r.rps:,.0f} | {r.p50:.2f} | {r.p99:.2f} | {r.errors} | {r.cpu_ms:.2f} | "
            f"{r.sim_cpu_ms:.2f} | {db} | {r.rss:.0f} | {ratio} |"
        )
    lines += [
        "",
        "Errors are non-2xx answers plus socket errors. Server CPU is utime+stime of the server's "
        "process tree over the measured seconds, per request; for the simulator row it is the "
        "simulator's own. PostgreSQL and Redis are the machine's shared servers: other work on "
        "them during the run counts too. The simulator's own rows are bounded by wrk (one "
        "thread, on the same cores), not by the simulator.",
        "",
        "## Time to first byte, streamed",
        "",
        f"Sequential streamed requests on one keep-alive connection ({args.probe} each), median "
        "time from sending the request to the first `data:` event. The simulator answers "
        "later when its requests are spaced out (a process woken from an idle wait; on one "
        "slower machine ~0.11 ms back to back, ~0.3 ms 1.5 ms apart), and through a gateway "
        "it sees one request per "
        "gateway cycle; so each gateway is also compared with the simulator paced alike (the "
        "probe keeps a core busy for the gateway's extra time per request before each one):",
        "",
        "| target | TTFB ms | whole answer ms | added vs simulator back to back ms "
        "| simulator paced alike ms | added vs simulator paced alike ms | failures |",
        "|---|---|---|---|---|---|---|",
    ]
    base = probes.get("simulator")
    for name, p in probes.items():
        added = f"{p['ttfb_ms'] - base['ttfb_ms']:.2f}" if base and name != "simulator" else ""
        paced = p.get("paced_simulator_ttfb_ms")
        paced_cells = (
            f"{paced:.2f} ({p['paced_gap_ms']:.2f} ms apart) | {p['ttfb_ms'] - paced:.2f}"
            if paced is not None
            else " | "
        )
        lines.append(
            f"| {name} | {p['ttfb_ms']:.2f} | {p['total_ms']:.2f} | {added} | {paced_cells} "
            f"| {p['failures']} |"
        )
    lines += ["", "## Audit records", ""]
    lines += [f"- {'' if good else '**MISMATCH** '}{line}" for line, good in audits] or ["- none"]
    lines += ["", "## Memory (meshgate-postgres, plain chat, c=16)", ""]
    if memory:
        for i, (requests, seconds, rss, served) in enumerate(memory, 1):
            capped = (
                f" (stopped by the {args.memory_seconds:g} s cap, short of "
                f"{args.memory_requests:,})"
                if requests < args.memory_requests
                else ""
            )
            lines.append(
                f"- run {i}: {requests:,} requests in {seconds:.0f} s{capped}: RSS {rss:.1f} MB "
                f"after {served:,} requests since the worker started"
            )
    else:
        lines.append("- not run")
    lines += ["", "## Targets (issue 9)", ""]
    lines += [f"- {t}" for t in targets(by, probes, memory, args)]
    return "\n".join(lines) + "\n"


def targets(by, probes, memory, args) -> list[str]:
    out = []

    def mark(good: bool) -> str:
        return "**met**" if good else "**not met**"

    for stream in (False, True):
        for concurrency in (16, 64):
            pg = by.get(("meshgate-postgres", stream, concurrency))
            peer = by.get(("litellm", stream, concurrency))
            mode = "streamed" if stream else "plain"
            if pg and peer:
                ratio = pg.rps / peer.rps
                # LiteLLM is CPU-bound, so its req/s follows whatever else the machine runs;
                # CPU per request (Meshgate's with PostgreSQL's and Redis') varies far less.
                cost = pg.cpu_ms + (pg.db_cpu_ms or 0)
                line = (
                    f"{mark(ratio >= 10 and pg.errors == 0)} >= 10x LiteLLM, {mode}, "
                    f"c={concurrency}, no errors: {pg.rps:,.0f} vs {peer.rps:,.0f} req/s = "
                    f"{ratio:.1f}x, {pg.errors} errors; CPU per request {cost:.2f} ms (with "
                    f"PostgreSQL and Redis) vs {peer.cpu_ms:.2f} ms = {peer.cpu_ms / cost:.1f}x"
                )
                if concurrency in REFERENCE:
                    reference = REFERENCE[concurrency][stream]
                    line += (
                        f"; against issue 9's LiteLLM figure ({reference} req/s) "
                        f"{pg.rps / reference:.1f}x"
                    )
                out.append(line)
    sim = by.get(("simulator", False, 1))
    for name in MESHGATE_TARGETS:
        row = by.get((name, False, 1))
        if sim and row:
            added = row.p50 - sim.p50
            out.append(
                f"{mark(added <= 2)} <= 2 ms added at c=1, plain ({name}): p50 {row.p50:.2f} - "
                f"{sim.p50:.2f} ms = {added:.2f} ms"
            )
        if "simulator" in probes and name in probes:
            added = probes[name]["ttfb_ms"] - probes["simulator"]["ttfb_ms"]
            out.append(
                f"{mark(added <= 1)} <= 1 ms added to the first byte, streamed ({name}): "
                f"{added:.2f} ms over the simulator back to back"
            )
            paced = probes[name].get("paced_simulator_ttfb_ms")
            if paced is not None:
                added = probes[name]["ttfb_ms"] - paced
                out.append(
                    f"{mark(added <= 1)} the same over the simulator paced alike ({name}): "
                    f"{added:.2f} ms"
                )
    if memory:
        rss = [run[2] for run in memory]
        full = all(run[0] >= args.memory_requests for run in memory)
        good = max(rss) < 150 and rss[-1] - rss[0] <= 5
        verdict = mark(good) if full or not good else "**not fully measured**"
        note = "" if full else " (some runs were cut short by the time cap: see Memory)"
        out.append(
            f"{verdict} < 150 MB RSS after {args.memory_requests:,} requests and not growing "
            f"over two more runs: {' / '.join(f'{r:.1f}' for r in rss)} MB after "
            f"{' / '.join(f'{run[3]:,}' for run in memory)} requests{note}"
        )
    return out


def versions(litellm: Path | None) -> dict[str, str]:
    def run(*command: str) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT)
            return (out.stdout + out.stderr).strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"

    from importlib.metadata import version

    rev = run("git", "rev-parse", "--short", "HEAD")
    # The previous run's report, rewritten by this one, is not a change to what is measured.
    changed = run(
        "git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/RESULTS.md"
    )
    if changed:
        rev += " (with uncommitted changes)"
    found = {
        "python": platform.python_version(),
        "meshgate": rev,
        "uvicorn": version("uvicorn"),
        "wrk": run("wrk", "-v").split("[")[0].removeprefix("wrk").strip(),
    }
    if litellm:
        found["litellm"] = run(str(litellm.parent / "python"), "-c", _LITELLM_VERSION)
    return found


_LITELLM_VERSION = "from importlib.metadata import version; print(version('litellm'))"


def machine() -> str:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return f"{os.cpu_count()} cores ({model}), {mem / 1024 / 1024:.0f} GiB RAM"
