"""The house's layout, checked from the source: no import circles, files that read in one sitting,
dependencies that point down the layers `docs/ARCHITECTURE.md` draws, and mechanism below the
apps (only `meshsite/lib` imports the transport libraries; its transports import no Django).

Every non-test module of the project is parsed (its AST, nothing is imported) and each import
becomes an edge of a module graph: imports inside functions count (a lazy import is still a
dependency), imports under `if TYPE_CHECKING:` do not (they never run).

The layers, from the bottom up (a module may import its own unit and the units below it):

    meshsite.lib   mechanism shared by every app; imports no app and nothing else of meshsite
    connections    what can be called
    audit          what happened and who pays (reads connections for names and prices)
    quotas         what may be spent (counts the spend audit records)
    gateway        the call: API keys, the OpenAI-compatible door, the hot path
    playground     people on top (calls the gateway as an API call would)
    simulator      a demo and test tool; imports nothing of the project (it runs without Django)
    meshsite       settings, urls, asgi, celery: wires everything together

Migrations are left out of the layering (a data migration runs against historical models and
may read a constant of the app it depends on); they still count for circles.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("meshsite", "connections", "audit", "quotas", "gateway", "playground", "simulator")
# Scripts beside the apps: held to the size rule, not part of the import graph.
SCRIPT_FOLDERS = ("bench", "mutation")
MAX_LINES = 500

LAYERS = {
    "meshsite.lib": 0,
    "connections": 1,
    "audit": 2,
    "quotas": 3,
    "gateway": 4,
    "playground": 5,
    "simulator": 5,
    "meshsite": 6,
}
# Units that may import no other unit at all, whatever their layer.
SELF_CONTAINED = {"meshsite.lib", "simulator"}
# Transport libraries only the mechanism package may import (the apps speak domain words): the
# upstream HTTP client's parser, libpq for the PostgreSQL pipeline, Redis' reply parser.
MECHANISM_ONLY = ("httptools", "psycopg.pq", "hiredis")
# The one piece of meshsite/lib that is Django plumbing, not transport: the permissions and
# strict serializers every app's /api/ shares. The transports import no Django.
DJANGO_PLUMBING = {"meshsite.lib.drf"}

# Rule breaks in files other parts of issue 17 are rewriting, each named with its owner. The
# lead empties this at merge; `test_every_pending_exception_still_exists` says which went stale.
PENDING: dict[str, set] = {
    "circles": set(),
    "oversize": set(),
    "layering": set(),
    "mechanism": set(),
}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path

    @property
    def is_migration(self) -> bool:
        return "migrations" in self.path.parts

    @property
    def package(self) -> str:
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]


def _is_test(path: Path) -> bool:
    relative = path.relative_to(ROOT)
    return "tests" in relative.parts or relative.name in {"conftest.py"}


def project_modules(*, tests: bool = False) -> dict[str, Module]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if _is_test(path) and not tests:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = Module(name, path)
    return modules


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(module: Module) -> list[tuple[str, int]]:
    """Every name `module` imports, absolute (`package.module.name` for `from` imports), with
    its line."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    source = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    source = child.module or ""
                # `from package import submodule` depends on the submodule, `from module
                # import name` on the module: the longest known prefix decides (see below).
                found.extend((f"{source}.{alias.name}", child.lineno) for alias in child.names)
            visit(child)

    visit(ast.parse(module.path.read_text(), filename=str(module.path)))
    return found


def _project_target(name: str, modules: dict[str, Module]) -> str | None:
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(modules: dict[str, Module]) -> dict[str, dict[str, int]]:
    """{module: {imported project module: first line}}."""
    graph: dict[str, dict[str, int]] = {}
    for name, module in modules.items():
        edges: dict[str, int] = {}
        for imported, line in imported_names(module):
            target = _project_target(imported, modules)
            if target is not None and target != name:
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, {}):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.add(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def unit(name: str) -> str:
    if name == "meshsite.lib" or name.startswith("meshsite.lib."):
        return "meshsite.lib"
    if name.startswith(("gateway.quotas.", "quotas.")) or name in {"gateway.quotas", "quotas"}:
        return "quotas"
    return name.split(".")[0]


def layering_breaks(modules, graph) -> dict[tuple[str, str], str]:
    breaks = {}
    for name, edges in graph.items():
        if modules[name].is_migration:
            continue
        here = unit(name)
        for imported, line in edges.items():
            there = unit(imported)
            if there == here:
                continue
            if here in SELF_CONTAINED or LAYERS[there] >= LAYERS[here]:
                breaks[(name, imported)] = (
                    f"{name}:{line} imports {imported} ({here} may not depend on {there})"
                )
    return breaks


def _is_library(imported: str, library: str) -> bool:
    return imported == library or imported.startswith(f"{library}.")


def mechanism_breaks(modules) -> dict[tuple[str, str], str]:
    breaks = {}
    for name, module in modules.items():
        if unit(name) == "meshsite.lib":
            continue
        for imported, line in imported_names(module):
            for library in MECHANISM_ONLY:
                if _is_library(imported, library):
                    breaks[(name, library)] = (
                        f"{module.path.relative_to(ROOT)}:{line} imports {library}, "
                        "which belongs in meshsite/lib"
                    )
    return breaks


def oversize_files() -> dict[str, int]:
    sizes = {}
    for folder in (*PACKAGES, *SCRIPT_FOLDERS):
        for path in (ROOT / folder).rglob("*.py"):
            if _is_test(path) or "migrations" in path.parts:
                continue
            if any(part.startswith(".") for part in path.relative_to(ROOT).parts):
                continue  # bench/.venv-litellm and friends: installed, not ours
            lines = len(path.read_text().splitlines())
            if lines > MAX_LINES:
                sizes[str(path.relative_to(ROOT))] = lines
    return sizes


def _found() -> dict[str, dict]:
    modules = project_modules()
    graph = import_graph(modules)
    return {
        "circles": {c: " <-> ".join(sorted(c)) for c in circles(graph)},
        "oversize": {path: f"{path}: {n} lines" for path, n in oversize_files().items()},
        "layering": layering_breaks(modules, graph),
        # The apps' tests too: no app speaks a wire protocol itself, not even to test one.
        "mechanism": mechanism_breaks(project_modules(tests=True)),
    }


def _new(kind: str) -> list[str]:
    found = _found()[kind]
    return sorted(message for key, message in found.items() if key not in PENDING[kind])


def test_no_import_circles():
    assert _new("circles") == []


def test_no_module_over_500_lines_outside_tests_and_migrations():
    assert _new("oversize") == []


def test_dependencies_point_down_the_layers():
    assert _new("layering") == []


def test_only_the_mechanism_package_imports_transport_libraries():
    assert _new("mechanism") == []


def test_the_mechanism_package_holds_the_transports_and_its_transports_import_no_django():
    lib = {name: m for name, m in project_modules().items() if unit(name) == "meshsite.lib"}
    imported = {name: [n for n, _ in imported_names(module)] for name, module in lib.items()}
    everything = {n for names in imported.values() for n in names}
    # What the apps may not import is imported here (the check above looks for real names).
    assert all(any(_is_library(n, library) for n in everything) for library in MECHANISM_ONLY[:2])
    django = {
        f"{name} imports {n}"
        for name, names in imported.items()
        if name not in DJANGO_PLUMBING
        for n in names
        if n.split(".")[0] in ("django", "rest_framework")
    }
    assert sorted(django) == []


def test_every_pending_exception_still_exists():
    """A rule break fixed (or a file moved) is taken out of PENDING, so none hides behind it."""
    found = _found()
    stale = {kind: sorted(map(str, keys - set(found[kind]))) for kind, keys in PENDING.items()}
    assert {kind: keys for kind, keys in stale.items() if keys} == {}


# --- the checker checks what it should --------------------------------------------------------


def _graph_of(tmp_path: Path, files: dict[str, str]) -> tuple[dict, dict]:
    modules = {}
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        parts = Path(relative).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = Module(name, path)
    return modules, import_graph(modules)


def test_the_checker_sees_a_lazy_circle_and_not_a_type_checking_one(tmp_path):
    _, graph = _graph_of(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/a.py": "from . import b\n",
            "app/b.py": "def f():\n    from .a import thing\n",
            "app/c.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n"
            ),
            "app/d.py": "from app.c import y\n",
        },
    )
    assert circles(graph) == [frozenset({"app.a", "app.b"})]
    assert "app.a" not in graph["app.c"]
    assert graph["app.d"] == {"app.c": 1}


def test_the_checker_refuses_an_upward_import(tmp_path):
    modules, graph = _graph_of(
        tmp_path,
        {
            "connections/__init__.py": "",
            "connections/x.py": "from gateway.keys import apikey_create\n",
            "gateway/__init__.py": "",
            "gateway/keys.py": "from connections import x\n",
            "simulator/__init__.py": "",
            "simulator/app.py": "import connections.x\n",
        },
    )
    assert set(layering_breaks(modules, graph)) == {
        ("connections.x", "gateway.keys"),
        ("simulator.app", "connections.x"),
    }
