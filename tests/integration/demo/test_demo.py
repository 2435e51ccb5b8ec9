"""The README's first command, end to end on a small order count."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fixtures import Vhost

pytestmark = pytest.mark.integration


def _demo(vhost: Vhost, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "RABBITMQ_MANAGEMENT_URL": vhost.management_url,
        "AMQP_URL": vhost.amqp_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("vhost_name", ["/", ""])
def test_the_demo_refuses_the_default_vhost(vhost: Vhost, vhost_name: str) -> None:
    done = _demo(vhost, "--vhost", vhost_name, "--orders", "1")
    assert done.returncode == 1
    assert "will not touch the default vhost" in done.stdout + done.stderr
    assert vhost.client.vhost_exists("/")


def test_the_demo_refuses_a_work_folder_outside_var(vhost: Vhost, tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    done = _demo(vhost, "--vhost", vhost.name, "--work", str(tmp_path), "--orders", "1")
    assert done.returncode == 1
    assert "must lie inside" in done.stdout + done.stderr
    assert precious.read_text() == "keep me"


def test_demo_runs_end_to_end_and_every_invariant_holds(vhost: Vhost) -> None:
    work = Path("var") / f"test-{vhost.name}"
    try:
        _run_demo(vhost, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_demo(vhost: Vhost, work: Path) -> None:
    env = {
        **os.environ,
        "RABBITMQ_MANAGEMENT_URL": vhost.management_url,
        "AMQP_URL": vhost.amqp_url,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "demo",
            "--orders",
            "120",
            "--flaky-rate",
            "0.1",
            "--poison-rate",
            "0.05",
            "--seed",
            "11",
            "--vhost",
            vhost.name,
            "--work",
            str(work),
            "--json",
            "--timeout",
            "180",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"] is True
    # The children's log lines go to files, named at the end, not through the display.
    workers_log = (work / "logs" / "workers.log").read_text()
    assert '"worker.dead_lettered"' in workers_log  # poisoned orders were dead-lettered
    assert "worker.dead_lettered" not in done.stderr
    assert (work / "logs" / "producer.log").exists()
    assert f"logs: {work}/logs/workers.log" in done.stderr
    assert report["simulation"]["orders"] == 120
    assert report["simulation"]["poison_orders"] > 0 and report["simulation"]["flaky_orders"] > 0
    names = {c["check"] for c in report["checks"]}
    assert {
        "applied",
        "out-of-order orders",
        "dead-lettered events",
        "units reserved once",
        "points credited once",
        "pairs counted once",
        "one fact per event",
        "one audit row per event",
    } <= names
    assert all(c["ok"] for c in report["checks"])
    assert "every invariant holds" in done.stderr
