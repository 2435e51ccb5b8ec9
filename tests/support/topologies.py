"""Test topologies: the real file with settings a test needs (short delays, fewer shards)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from topology.spec import DEFAULT_TOPOLOGY_FILE, TopologySpec, parse_spec


def default_data() -> dict[str, Any]:
    """The shipped topology file as plain data."""
    data: dict[str, Any] = yaml.safe_load(DEFAULT_TOPOLOGY_FILE.read_text())
    return data


def fast_data(retry_delays: tuple[str, ...] = ("200ms", "400ms", "800ms")) -> dict[str, Any]:
    """The shipped topology with short retry delays and no simulated handling time."""
    data = default_data()
    for ds in data["downstreams"].values():
        ds["retry"]["tiers"] = dict(zip(ds["retry"]["tiers"], retry_delays, strict=True))
        ds["handler_time"] = "0ms"
    return data


def write(data: dict[str, Any], path: Path) -> Path:
    """Write topology data as a YAML file; return its path."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def spec_of(data: dict[str, Any]) -> TopologySpec:
    """Validate topology data."""
    return parse_spec(yaml.safe_dump(data, sort_keys=False))
