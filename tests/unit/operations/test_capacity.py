"""The catch-up arithmetic of `python -m topology capacity`."""

from __future__ import annotations

import argparse

import pytest

from common.cli import duration
from operations.capacity import MAX_SHARDS, Capacity
from operations.capacity_cli import count


def test_the_seeds_example_needs_about_28k_events_per_second() -> None:
    plan = Capacity(100_000_000, 3600, 0.0, 1750.0, 2, 4)
    assert round(plan.needed_per_s) == 27_778
    assert plan.processes == 16 and plan.shards == 16
    assert any("raise `shards` to 16" in cap for cap in plan.caps())


def test_what_keeps_arriving_adds_to_the_rate_needed() -> None:
    plan = Capacity(3_600_000, 3600, 500.0, 1000.0, 1, 4)
    assert plan.needed_per_s == 1500 and plan.processes == 2 and plan.shards == 4
    assert not any("raise" in cap for cap in plan.caps())
    # In the autoscaler's terms: up to a replica per shard, two of them wanted.
    assert plan.replicas() == {"min": 1, "max": 4, "wanted": 2}
    assert Capacity(100_000_000, 3600, 0.0, 1750.0, 2, 4).replicas()["max"] == 16


def test_past_the_files_shard_limit_the_cap_says_how_long_it_takes() -> None:
    plan = Capacity(1_000_000_000, 3600, 0.0, 1000.0, 1, 4)
    assert plan.processes > MAX_SHARDS
    [limit] = [cap for cap in plan.caps() if "allows" in cap]
    assert f"{MAX_SHARDS * 1000:,} events/s" in limit and "4.3 h" in limit


def test_counts_and_durations_read_as_people_write_them() -> None:
    assert [count(t) for t in ("5000", "250k", "100M", "1.5G")] == [
        5000,
        250_000,
        10**8,
        1_500_000_000,
    ]
    assert [duration(t) for t in ("30m", "1h", "2d", "90", "1.5s", "250ms")] == [
        1800,
        3600,
        172_800,
        90,
        1.5,
        0.25,
    ]
    with pytest.raises(argparse.ArgumentTypeError):
        count("lots")
