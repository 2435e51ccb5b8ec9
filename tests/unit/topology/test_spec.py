"""The topology file model: validation errors name the file, the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.settings import vhost_of, with_vhost
from tests.support import topologies
from topology.spec import DEFAULT_TOPOLOGY_FILE, TopologyFileError, load_spec, parse_spec
from topology.units import format_ms, parse_duration_ms, parse_size_bytes


def test_shipped_file_declares_the_five_downstreams() -> None:
    spec = load_spec(DEFAULT_TOPOLOGY_FILE)
    assert list(spec.downstreams) == [
        "inventory",
        "loyalty",
        "recommendations",
        "warehouse",
        "fraud_audit",
    ]
    handling = {name: d.handler_time for name, d in spec.downstreams.items()}
    assert handling == {
        "inventory": 2,
        "loyalty": 5,
        "recommendations": 10,
        "warehouse": 200,
        "fraud_audit": 20,
    }
    warehouse = spec.downstreams["warehouse"]
    assert warehouse.batch is not None and warehouse.batch.size > 1
    for d in spec.downstreams.values():
        assert d.routing_keys == ["order.#"]
        assert list(d.retry.tiers.values()) == [1000, 10_000, 60_000]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "downstreams:\n  inventory:\n    shards: 0\n",
            "downstreams.inventory.shards: Input should be greater",
        ),
        (
            "downstreams:\n  inventory:\n    sharts: 4\n",
            "downstreams.inventory.sharts: unknown field",
        ),
        (
            "downstreams:\n  inventory:\n    retry: {tiers: {short: 5x}}\n",
            "downstreams.inventory.retry.tiers.short: '5x' is not a duration",
        ),
        (
            "downstreams:\n  inventory:\n    retry: {tiers: {short: 0ms}}\n",
            "downstreams.inventory.retry: tier 'short'",
        ),
        ("downstreams:\n  Inventory!: {}\n", "downstreams.Inventory!"),
        (
            "downstreams:\n  inventory:\n    routing_keys: ['order..x']\n",
            "downstreams.inventory.routing_keys.0",
        ),
        (
            "downstreams:\n  inventory:\n    semantics: exactly-once\n",
            "downstreams.inventory.semantics",
        ),
        (
            "downstreams:\n  inventory:\n    queue_type: classic\n",
            "delivery_limit needs queue_type quorum",
        ),
        (
            "downstreams:\n  inventory:\n    queue_type: classic\n    delivery_limit: null\n"
            "    replication: {group_size: 3}\n",
            "replication needs queue_type quorum",
        ),
        (
            "replication: {group_size: 0}\ndownstreams:\n  inventory: {}\n",
            "replication.group_size: Input should be greater than or equal to 1",
        ),
        (
            "replication: {group_size: 10}\ndownstreams:\n  inventory: {}\n",
            "replication.group_size: Input should be less than or equal to 9",
        ),
        (
            "replication: {leader_locator: random}\ndownstreams:\n  inventory: {}\n",
            "replication.leader_locator",
        ),
        ("downstreams: {}\n", "downstreams: Dictionary should have at least 1 item"),
        ("downstreams:\n  orders: {}\n", "collides"),
        ("log: {max_age: 10ms}\ndownstreams:\n  inventory: {}\n", "log.max_age"),
        ("version: 2\ndownstreams:\n  inventory: {}\n", "version"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("downstreams:\n  inventory: {shards: [\n", "not valid YAML"),
    ],
)
def test_bad_file_names_field_and_reason(yaml_text: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(TopologyFileError) as info:
        load_spec(path)
    rendered = info.value.render()
    assert str(path) in rendered
    assert expected in rendered


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TopologyFileError, match="cannot read the file"):
        load_spec(tmp_path / "nope.yaml")


def test_yaml_error_gives_the_line() -> None:
    with pytest.raises(TopologyFileError, match="line 4, column 4"):
        parse_spec("downstreams:\n  inventory:\n    shards: [1\n  x: }")


def test_tier_names_keep_their_order() -> None:
    data = topologies.default_data()
    data["downstreams"]["inventory"]["retry"]["tiers"] = {"b": "2s", "a": "1s", "c": "500ms"}
    spec = topologies.spec_of(data)
    assert list(spec.downstreams["inventory"].retry.tiers.items()) == [
        ("b", 2000),
        ("a", 1000),
        ("c", 500),
    ]


def test_units() -> None:
    assert parse_duration_ms("250ms") == 250
    assert parse_duration_ms("7d") == 7 * 86_400_000
    assert parse_size_bytes("1GiB") == 2**30
    assert parse_size_bytes(42) == 42
    assert [format_ms(v) for v in (1000, 250, 120_000, 90_000)] == ["1s", "250ms", "2m", "90s"]
    for bad in ("10", 10, "1 week", True):
        with pytest.raises(ValueError):
            parse_duration_ms(bad)


def test_vhost_from_url() -> None:
    assert vhost_of("amqp://guest:guest@localhost:5672/") == "/"
    assert vhost_of("amqp://guest:guest@localhost:5672") == "/"
    assert vhost_of("amqp://h/%2F") == "/"
    assert vhost_of("amqps://h:5671/bus") == "bus"
    assert vhost_of(with_vhost("amqp://u:p@h:5672/", "test-1")) == "test-1"


def test_replication_defaults_and_per_downstream_override() -> None:
    spec = load_spec(DEFAULT_TOPOLOGY_FILE)
    assert (spec.replication.group_size, spec.replication.leader_locator) == (3, "balanced")
    assert all(spec.replication_of(d) == spec.replication for d in spec.downstreams)
    data = topologies.default_data()
    data["downstreams"]["warehouse"]["replication"] = {"group_size": 5}
    spec = topologies.spec_of(data)
    assert spec.replication_of("warehouse").group_size == 5
    assert spec.replication_of("inventory").group_size == 3
