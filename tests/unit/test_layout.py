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


def test_only_topology_declares_broker_objects() -> None:
    declaring = ("declare_queue(", "declare_exchange(", ".bind(", "put_policy(")
    offenders = [
        str(p.relative_to(ROOT))
        for package in ("events", "producer", "workers")
        for p in (ROOT / package).rglob("*.py")
        if any(call in p.read_text() for call in declaring)
    ]
    assert not offenders
