"""The README's first command, end to end on a small order count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fixtures import Vhost

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end_and_every_invariant_holds(vhost: Vhost, tmp_path: Path) -> None:
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
            str(tmp_path),
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
    assert report["simulation"]["orders"] == 120
    assert report["simulation"]["poison_orders"] > 0 and report["simulation"]["flaky_orders"] > 0
    names = {c["check"] for c in report["checks"]}
    assert {
        "applied",
        "out-of-order orders",
        "dead-lettered events",
        "units reserved once",
    } <= names
    assert all(c["ok"] for c in report["checks"])
    assert "every invariant holds" in done.stderr
