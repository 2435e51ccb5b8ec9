"""Any topology file, however broken, gives a TopologyFileError or a valid spec — nothing else."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import topologies
from topology.compile import compile_topology
from topology.spec import TopologyFileError, parse_spec

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["1s", "0ms", "-5s", "10", "1GB", "order.#", "quorum"]),
)
trees = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


def _parse(text: str) -> None:
    try:
        spec = parse_spec(text)
    except TopologyFileError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        return
    compile_topology(spec)  # anything valid must compile


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_any_text(text: str) -> None:
    _parse(text)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_any_structure(tree: Any) -> None:
    _parse(yaml.safe_dump(tree))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["inventory", "warehouse"]), st.text(max_size=15), trees)
def test_any_value_in_a_real_file(downstream: str, key: str, value: Any) -> None:
    data = topologies.default_data()
    data["downstreams"][downstream][key or "shards"] = value
    _parse(yaml.safe_dump(data))
