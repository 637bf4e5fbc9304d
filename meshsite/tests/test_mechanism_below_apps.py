"""Mechanism lives below the apps (issue 17): no app module speaks a wire protocol itself.

The upstream HTTP client (httptools) and the PostgreSQL pipeline (libpq through
`psycopg.pq`) are `meshsite.lib`'s; the apps use them through its interfaces. Read from
the source's syntax tree, so an import inside a function counts as much as one on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ("connections", "audit", "quotas", "gateway", "playground", "simulator")
MECHANISM = ROOT / "meshsite" / "lib"
# The one piece of meshsite/lib that is Django plumbing, not transport: the permissions and
# strict serializers every app's /api/ shares. The transports import no Django.
DJANGO_PLUMBING = {"drf.py"}


def imported_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def forbidden(name: str) -> bool:
    return (
        name == "httptools"
        or name.startswith("httptools.")
        or name == "psycopg.pq"
        or (name.startswith("psycopg.pq."))
    )


def app_modules() -> list[Path]:
    found = []
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if "/migrations/" in relative:
                continue
            found.append(path)
    return found


def test_no_app_module_imports_httptools_or_libpq():
    offenders = {}
    modules = app_modules()
    assert len(modules) > 100  # the walk found the apps
    for path in modules:
        names = imported_names(ast.parse(path.read_text(), str(path)))
        bad = sorted(name for name in names if forbidden(name))
        if bad:
            offenders[path.relative_to(ROOT).as_posix()] = bad
    assert offenders == {}


def test_the_mechanism_package_holds_them_and_knows_no_app():
    names: set[str] = set()
    django: set[str] = set()
    for path in MECHANISM.rglob("*.py"):
        if "tests" in path.relative_to(MECHANISM).parts:
            continue
        imported = imported_names(ast.parse(path.read_text(), str(path)))
        names |= imported
        if path.name not in DJANGO_PLUMBING:
            django |= {n for n in imported if n.split(".")[0] in ("django", "rest_framework")}
    assert any(forbidden(name) for name in names)  # the check above looks for the right names
    assert sorted(name for name in names if name.split(".")[0] in APPS) == []
    assert sorted(django) == []
