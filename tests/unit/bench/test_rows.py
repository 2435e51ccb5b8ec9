"""The bench table: every comparison row says how many processes run on each side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# The benchmarks need the dev install (psycopg for the shared-store rows); a SQLite-only
# install runs the unit suite without them.
pytest.importorskip("psycopg", reason="the benchmarks need the dev install")

from bench.__main__ import rows


def _drain(rate: float) -> dict[str, Any]:
    return {"events_per_s": rate, "cpu_us_per_event": 100.0, "window_s": 1.0}


def _per_downstream(rate: float, processes: int) -> dict[str, Any]:
    return {"slowest_events_per_s": rate, "cpu_us_per_event": 100.0, "processes": processes}


def report(downstreams: int = 5) -> dict[str, Any]:
    """A report shaped as `python -m bench` writes it."""
    bus = {**_drain(2000.0), "ratio": 1.3}
    pair = {
        "clean": _per_downstream(2000.0, downstreams),
        "poisoned": _per_downstream(1900.0, downstreams),
    }
    return {
        "relay": {
            "raw_events_per_s": 2000,
            "relay_events_per_s": 1800,
            "ratio": 0.9,
            "relay_cpu_us_per_event": 300,
            "raw_cpu_us_per_event": 200,
        },
        "workers": {
            "e2e_0ms": {
                "downstreams": downstreams,
                "raw_aio_pika": _drain(1500.0),
                "bus_process_per_downstream": bus,
                "bus_one_process": bus,
                "bus_asyncio_loop": bus,
                "faststream": _drain(400.0),
                "faststream_inbox": _drain(350.0),
            },
            "process_per_downstream": {
                "bus_workers_all": _per_downstream(2000.0, downstreams),
                "raw_aio_pika_process_per_downstream": _per_downstream(2100.0, downstreams),
                "node_amqplib_process_per_downstream": _per_downstream(9000.0, downstreams),
                "ratio_to_raw": 0.95,
                "fraction_of_node": 0.22,
            },
            "inventory_2ms": {
                "bus": bus,
                "ratio": 0.8,
                "ideal_events_per_s": 6000,
                "raw_ceiling": _drain(6000.0),
            },
            "warehouse_batches": {"bus": bus, "ratio": 0.9, "ideal_records_per_s": 500},
            "poison_cost": {
                "rounds": [{"clean": _drain(2000.0), "poisoned": bus}],
                "ratio_median": 0.97,
            },
            "poison_everywhere": {
                "processes": downstreams,
                "1%": {"rounds": [pair], "ratio_median": 0.95},
                "5%": {"rounds": [pair], "ratio_median": 0.8},
            },
        },
    }


def test_every_comparison_row_states_the_process_counts() -> None:
    table = rows(report(downstreams=7))
    compared = [r for r in table if r[1] and not r[1].startswith("ideal")]
    assert len(compared) >= 10
    for name, *_ in compared:
        assert "process" in name, f"{name!r} does not say how many processes run on each side"
    # The bus's process count comes from the report (a process per downstream), not a constant.
    names = [r[0] for r in compared]
    assert sum("bus 7 processes" in name for name in names) == 4, names
    assert sum("7 processes each side" in name for name in names) == 4, names


def test_a_saved_report_is_printed_again(tmp_path: Path) -> None:
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(report()))
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--report", str(saved)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "5 processes each side" in out and "Node amqplib" in out


def test_a_missing_report_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--report", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "cannot read" in done.stderr and "Traceback" not in done.stderr
