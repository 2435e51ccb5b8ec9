"""`python -m workers ready`: the compose healthcheck finds every downstream of the file on the
ports `workers all` counts up from, and names the ones not ready."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from common.health import serve
from tests.support import topologies
from tests.support.processes import free_port
from workers.process.cli import main


def test_ready_finds_each_downstream_on_its_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("common.startup.configure_logging", lambda *a, **k: None)
    data = topologies.fast_data()
    names = list(data["downstreams"])
    file = tmp_path / "orders.yaml"
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    # Ports base, base+1, ...: find a run of free ones (each checked once; a race is a retry).
    base = free_port()
    states = {d: (True, d != "warehouse") for d in names}
    for i, d in enumerate(names):
        serve(base + i, CollectorRegistry(), lambda d=d: states[d], addr="127.0.0.1")
    assert main(["ready", "--file", str(file), "--metrics-port", str(base), "inventory"]) == 0
    assert main(["ready", "--file", str(file), "--metrics-port", str(base)]) == 1
    assert "not ready: warehouse (not consuming yet)" in capsys.readouterr().out
