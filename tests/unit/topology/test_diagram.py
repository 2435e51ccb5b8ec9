"""The committed diagrams are generated from the topology file and cannot drift from it."""

from __future__ import annotations

from pathlib import Path

from topology.diagram import document
from topology.spec import DEFAULT_TOPOLOGY_FILE, load_spec

DOC = Path(__file__).resolve().parents[3] / "docs" / "topology.md"


def test_docs_topology_matches_the_file() -> None:
    expected = document(load_spec(DEFAULT_TOPOLOGY_FILE))
    assert DOC.read_text() == expected, "run: python -m topology diagram > docs/topology.md"


def test_every_queue_and_exchange_is_drawn() -> None:
    from topology.compile import compile_topology

    spec = load_spec(DEFAULT_TOPOLOGY_FILE)
    text = document(spec)
    objects = compile_topology(spec)
    for name in [*objects.exchanges, *objects.queues]:
        assert f'"{name}<br/>' in text, name
