"""`make mutate`: cosmic-ray on the security- and money-critical modules, each against its tests.

Each target is one module and the fast subset of tests that guards it. The tree is copied to
`var/mutate/<target>/tree` (the files git knows, tracked or not), so mutants are applied there and
the working copy is never touched; cosmic-ray then applies one mutant at a time, runs the tests
(stopping at the first failure) and keeps the outcome in `var/mutate/<target>/session.sqlite`.
The surviving mutants are printed with their diffs into `var/mutate/<target>/survivors.txt`;
`docs/MUTATION.md` says what became of each.

    .venv/bin/python mutation/run.py                 # every target
    .venv/bin/python mutation/run.py cost redaction  # some
    .venv/bin/python mutation/run.py --report        # re-print the summaries of finished runs

Runs one target after another, one mutant at a time: mutation testing is CPU-hungry, and the
tests it runs start real processes (the simulator, uvicorn) that would contend.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "var" / "mutate"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Target:
    module: str
    tests: tuple[str, ...]
    timeout: float  # seconds for one run of the tests; a mutant taking longer is killed


TARGETS: dict[str, Target] = {
    "auth": Target(
        "gateway/auth.py",
        ("gateway/tests/test_auth_negatives.py",),
        120,
    ),
    "catalog": Target(
        "gateway/directory.py",
        (
            "gateway/tests/test_catalog_gaps.py",
            "gateway/tests/test_not_granted.py",
            "gateway/tests/test_v1_service.py",
            "connections/tests/test_usable_by.py",
            "playground/tests/test_views.py",
            "audit/tests/test_stored_redaction.py",
        ),
        240,
    ),
    "cost": Target("audit/cost.py", ("audit/tests/test_writer_cost.py",), 60),
    "redaction": Target(
        "audit/redaction.py",
        ("audit/tests/test_writer_redaction.py", "audit/tests/test_stored_redaction.py"),
        60,
    ),
    "ledger": Target(
        "quotas/ledger.py",
        (
            "quotas/tests/test_ledger.py",
            "quotas/tests/test_quota_admission.py",
            "quotas/tests/test_quota_failover.py",
        ),
        300,
    ),
    "rollup": Target(
        "audit/services.py",
        (
            "audit/tests/test_rollup.py",
            "audit/tests/test_chargeback.py",
            "audit/tests/test_rollup_deletions.py",
        ),
        240,
    ),
}

# Operators whose mutants say nothing about these modules (no bit shifts, powers or membership
# tests in money or key code), kept out so the runs stay short enough to be a habit.
EXCLUDED_OPERATORS = [
    r"core/ReplaceBinaryOperator_.*_(Pow|RShift|LShift|BitOr|BitAnd|BitXor|FloorDiv|Mod)$",
    r"core/ReplaceBinaryOperator_(Pow|RShift|LShift|BitOr|BitAnd|BitXor|FloorDiv|Mod)_.*",
    r"core/ReplaceComparisonOperator_.*_(In|NotIn)$",
    r"core/ReplaceComparisonOperator_(Lt|LtE|Gt|GtE|Eq|NotEq)_(Is|IsNot)$",
    r"core/ReplaceComparisonOperator_(Is|IsNot)_(Lt|LtE|Gt|GtE)$",
]


def config_text(target: Target) -> str:
    tests = " ".join(target.tests)
    command = f"{BIN / 'python'} -m pytest -x -q -p no:randomly --create-db {tests}"
    return "\n".join(
        [
            "[cosmic-ray]",
            f'module-path = "{target.module}"',
            f"timeout = {target.timeout}",
            "excluded-modules = []",
            f"test-command = {json.dumps(command)}",
            "",
            "[cosmic-ray.distributor]",
            'name = "local"',
            "",
            "[cosmic-ray.filters.operators-filter]",
            f"exclude-operators = {json.dumps(EXCLUDED_OPERATORS)}",
            "",
        ]
    )


def copy_tree(dest: Path, at: str | None) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    if at:
        # The tree of one commit (to measure the tests as they were), not the working copy.
        dest.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "archive", at], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    else:
        _copy_working_files(dest)
    # Development keys (git-ignored) so settings load as in the working copy.
    (dest / "var").mkdir(exist_ok=True)
    for key_file in ("secret.key", "encryption.keys"):
        if (ROOT / "var" / key_file).exists():
            shutil.copy2(ROOT / "var" / key_file, dest / "var" / key_file)


def _copy_working_files(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name.decode())


def run(name: str, target: Target, at: str | None = None) -> dict:
    base = WORK / name
    base.mkdir(parents=True, exist_ok=True)
    tree = base / "tree"
    copy_tree(tree, at)
    config = base / "config.toml"
    config.write_text(config_text(target))
    session = base / "session.sqlite"
    session.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    def cr(*args: str) -> None:
        subprocess.run([str(BIN / args[0]), *args[1:]], cwd=tree, env=env, check=True)

    print(f"== {name}: {target.module} against {' '.join(target.tests)}", flush=True)
    cr("cosmic-ray", "init", str(config), str(session))
    cr("cr-filter-operators", str(session), str(config))
    cr("cosmic-ray", "baseline", str(config))
    cr("cosmic-ray", "exec", str(config), str(session))
    return summarize(name)


def summarize(name: str) -> dict:
    base = WORK / name
    session = base / "session.sqlite"
    dump = subprocess.run(
        [str(BIN / "cosmic-ray"), "dump", str(session)], capture_output=True, text=True, check=True
    ).stdout
    counts = {"killed": 0, "survived": 0, "incompetent": 0, "skipped": 0, "pending": 0}
    survivors = []
    for line in dump.splitlines():
        work_item, result = json.loads(line)
        if result is None:
            counts["pending"] += 1
            continue
        if result.get("worker_outcome") == "skipped":
            counts["skipped"] += 1
        elif result.get("worker_outcome") in ("exception", "abnormal"):
            counts["incompetent"] += 1
        elif result.get("test_outcome") == "survived":
            counts["survived"] += 1
            survivors.append((work_item, result))
        else:
            counts["killed"] += 1
    lines = []
    for work_item, result in survivors:
        for mutation in work_item["mutations"]:
            start = mutation["start_pos"][0]
            lines.append(f"{mutation['module_path']}:{start} {mutation['operator_name']}")
        lines.append(result.get("diff") or "")
    (base / "survivors.txt").write_text("\n".join(lines))
    tested = counts["killed"] + counts["survived"]
    counts["kill_rate"] = round(100 * counts["killed"] / tested, 1) if tested else None
    print(f"{name}: {json.dumps(counts)}", flush=True)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", help=f"some of: {', '.join(TARGETS)}")
    parser.add_argument("--report", action="store_true", help="summaries of finished runs only")
    parser.add_argument("--tests", nargs="+", help="other tests for the one target named")
    parser.add_argument("--at", help="mutate the tree of this commit, not the working copy")
    parser.add_argument("--label", default="", help="suffix of the run's folder (e.g. before)")
    args = parser.parse_args()
    names = args.targets or list(TARGETS)
    unknown = set(names) - set(TARGETS)
    if unknown or (args.tests and len(names) != 1):
        parser.error(f"unknown targets {sorted(unknown)}, or --tests with not exactly one target")
    for name in names:
        folder = f"{name}-{args.label}" if args.label else name
        target = TARGETS[name]
        if args.tests:
            target = Target(target.module, tuple(args.tests), target.timeout)
        if args.report:
            summarize(folder)
        else:
            run(folder, target, args.at)
    return 0


if __name__ == "__main__":
    sys.exit(main())
