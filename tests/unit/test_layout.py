"""The packages depend one way, the worker's rooms too, and only `topology` declares broker
objects.

common (no domain) <- broker, events <- topology <- operations; producer and workers build on
common, broker, events and topology and never on each other; `orderbus` (the installed
command) sits above them all; the simulation builds on them and nothing in production
imports it; demo and bench may use everything. `python -m
topology`'s entry module composes the operations' commands into its CLI: the one file allowed
to reach up.

Inside `workers`, each room by its role: the store, the handler API, shard ownership, applying
(the ordering guard and the group commit), the session (connections, shards, lanes, acks,
divert) and the process (build, CLI, supervisor, settings); the shipped handlers use only the
public API.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "common",
    "broker",
    "events",
    "topology",
    "operations",
    "producer",
    "workers",
    "orderbus",
}
APPS = {"demo", "bench", "tests"}
OURS = PRODUCTION | {"simulation"} | APPS
FORBIDDEN = {
    "common": OURS - {"common"},
    "broker": OURS - {"common", "broker"},
    "events": OURS - {"common", "events"},
    "topology": OURS - {"common", "broker", "events", "topology"},
    "operations": {"producer", "workers", "simulation"} | APPS,
    "producer": {"workers", "operations", "simulation"} | APPS,
    "workers": {"producer", "operations", "simulation"} | APPS,
    "simulation": {"operations", "orderbus"} | APPS,
    # The installed command: every program under one name, so above them all.
    "orderbus": {"simulation"} | APPS,
}
# The entry module of `python -m topology` composes its CLI from the operations' commands.
COMPOSITION_ROOTS = {ROOT / "topology" / "__main__.py": {"operations"}}

# The worker's rooms, and the rooms each may import (besides itself).
WORKER_ROOMS = {
    "store": set(),
    "api": {"store"},
    "metrics": set(),
    "ownership": {"store"},
    "applying": {"api", "store", "metrics"},
    "session": {"applying", "ownership", "api", "store", "metrics"},
    "handlers": {"api"},
    "process": {"session", "applying", "ownership", "api", "store", "metrics", "handlers"},
}


def _modules(path: Path) -> set[str]:
    """Every module a file imports, by its full dotted name."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _imports(path: Path) -> set[str]:
    return {m.split(".")[0] for m in _modules(path)}


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


def test_production_imports_no_simulation() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for package in PRODUCTION
        for p in (ROOT / package).rglob("*.py")
        if "simulation" in _imports(p)
    ]
    assert not offenders


def _room(path: Path) -> str:
    return path.relative_to(ROOT / "workers").parts[0].removesuffix(".py")


def test_every_worker_room_has_a_rule() -> None:
    rooms = {_room(p) for p in (ROOT / "workers").iterdir() if p.name != "__pycache__"}
    assert rooms - {"__init__", "__main__"} == set(WORKER_ROOMS)


@pytest.mark.parametrize("room", sorted(WORKER_ROOMS))
def test_the_worker_rooms_depend_one_way(room: str) -> None:
    allowed = WORKER_ROOMS[room] | {room}
    offenders = {}
    for path in (ROOT / "workers").rglob("*.py"):
        if _room(path) != room:
            continue
        reached = {
            m.split(".")[1] for m in _modules(path) if m.startswith("workers.") and m.count(".")
        }
        if reached - allowed:
            offenders[str(path.relative_to(ROOT))] = sorted(reached - allowed)
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
        for package in sorted(OURS - {"topology", "tests", "bench"})
        for p in (ROOT / package).rglob("*.py")
        for hit in _declarations(p)
    ]
    assert not offenders
