"""Where quotas' code stands: policy in quotas, wire mechanism in meshsite.lib, no circles."""

from __future__ import annotations

import ast
from pathlib import Path

import quotas
from meshsite.lib import redis as lib_redis
from quotas import runtime

PACKAGE = Path(quotas.__file__).parent
MODULES = sorted(p for p in PACKAGE.glob("*.py"))


def _imports(path: Path) -> set[str]:
    """The quotas modules `path` imports, at any depth of the file (lazy imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1:
                names = [base] if base else [alias.name for alias in node.names]
                found.update(f"quotas.{name}" for name in names)
            elif base == "quotas" or base.startswith("quotas."):
                found.add(base if base != "quotas" else "quotas.__init__")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("quotas."))
    return {name for name in found if (PACKAGE / f"{name.split('.', 1)[1]}.py").exists()}


def test_no_module_of_quotas_writes_redis_wire_bytes():
    for path in MODULES:
        text = path.read_text()
        assert "\\r\\n" not in text, f"{path.name} writes RESP itself"
        assert "encode_args" not in text, path.name


def test_no_module_of_quotas_or_of_the_redis_mechanism_is_over_500_lines():
    for path in [*MODULES, Path(lib_redis.__file__)]:
        assert len(path.read_text().splitlines()) <= 500, path.name


def test_the_modules_of_quotas_import_each_other_without_circles():
    graph = {f"quotas.{p.stem}": _imports(p) - {f"quotas.{p.stem}"} for p in MODULES}
    graph.pop("quotas.__init__", None)
    for deps in graph.values():
        deps.discard("quotas.__init__")
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        assert name not in path, " -> ".join([*path, name])
        if name in done:
            return
        for dep in sorted(graph.get(name, ())):
            visit(dep, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_start_makes_a_fresh_process_state():
    before = runtime.current
    before.alerted.add((1, None, 50))
    fresh = runtime.start()
    assert fresh is runtime.current and fresh is not before
    assert not fresh.alerted and not fresh.outage_keys and fresh.redis_down_until == 0.0
