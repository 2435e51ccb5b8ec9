"""The packages depend one way, and only `topology` declares broker objects.

common (no domain) <- events <- topology <- operations; producer and workers build on
common, events and topology and never on each other; demo and bench may use everything.
`python -m topology`'s entry module composes the operations' commands into its CLI: the one
file allowed to reach up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {
    "common",
    "events",
    "topology",
    "operations",
    "producer",
    "workers",
    "demo",
    "bench",
    "tests",
}
APPS = {"demo", "bench", "tests"}
FORBIDDEN = {
    "common": OURS - {"common"},
    "events": OURS - {"common", "events"},
    "topology": {"operations", "producer", "workers"} | APPS,
    "operations": {"producer", "workers"} | APPS,
    "producer": {"workers", "operations"} | APPS,
    "workers": {"producer", "operations"} | APPS,
}
# The entry module of `python -m topology` composes its CLI from the operations' commands.
COMPOSITION_ROOTS = {ROOT / "topology" / "__main__.py": {"operations"}}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependencies_point_one_way(package: str) -> None:
    def bad(path: Path) -> set[str]:
        return _imports(path) & FORBIDDEN[package] - COMPOSITION_ROOTS.get(path, set())

    offenders = {
        str(p.relative_to(ROOT)): sorted(bad(p)) for p in (ROOT / package).rglob("*.py") if bad(p)
    }
    assert not offenders


def test_every_package_has_a_rule() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - APPS == set(FORBIDDEN)


def _declarations(path: Path) -> list[str]:
    """Calls that create broker objects (a passive declare only reads a queue's depth)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name = node.func.attr
        passive = any(
            k.arg == "passive" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
        if name in {"declare_exchange", "exchange_declare", "queue_bind", "put_policy"} or (
            name in {"declare_queue", "queue_declare"} and not passive
        ):
            found.append(f"{path.name}:{node.lineno} {name}")
    return found


def test_only_topology_declares_broker_objects() -> None:
    offenders = [
        hit
        for package in ("common", "events", "operations", "producer", "workers", "demo")
        for p in (ROOT / package).rglob("*.py")
        for hit in _declarations(p)
    ]
    assert not offenders
