"""The packages depend one way (DESIGN.md): events and topology use neither producer nor workers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "events": {"topology", "producer", "workers"},
    "topology": {"producer", "workers"},
    "producer": {"workers"},
    "workers": {"producer"},
}


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
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN[package])
        for p in (ROOT / package).rglob("*.py")
        if _imports(p) & FORBIDDEN[package]
    }
    assert not offenders


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
        for package in ("events", "producer", "workers", "demo")
        for p in (ROOT / package).rglob("*.py")
        for hit in _declarations(p)
    ]
    assert not offenders
