"""The supervisor restarts a failing child with backoff and gives up on one that keeps failing."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from workers.process import supervisor as module
from workers.process.supervisor import Supervisor


async def test_a_child_that_keeps_failing_is_restarted_then_given_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(module, "MAX_RESTARTS", 2)
    monkeypatch.setattr(module, "backoff_delay", lambda *a, **k: 0.01)
    runs = tmp_path / "runs"
    supervisor = Supervisor(["inventory"], None, None)
    supervisor.commands["inventory"] = [
        sys.executable,
        "-c",
        f"open({str(runs)!r}, 'a').write('x'); raise SystemExit(3)",
    ]
    assert await supervisor.keep("inventory") == 3
    assert runs.read_text() == "xxx"  # the first run and two restarts


async def test_a_child_killed_by_a_signal_is_given_up_with_a_failing_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(module, "MAX_RESTARTS", 0)
    supervisor = Supervisor(["inventory"], None, None)
    supervisor.commands["inventory"] = [
        sys.executable,
        "-c",
        "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
    ]
    assert await supervisor.keep("inventory") == 1


async def test_a_child_stopped_by_the_supervisor_is_not_restarted() -> None:
    supervisor = Supervisor(["inventory"], None, None)
    supervisor.commands["inventory"] = [sys.executable, "-c", "import time; time.sleep(30)"]
    kept = asyncio.ensure_future(supervisor.keep("inventory"))
    while "inventory" not in supervisor.children:
        await asyncio.sleep(0.01)
    supervisor.forward(signal.SIGTERM)
    assert await asyncio.wait_for(kept, 10) != 0  # killed by SIGTERM: -15, and not restarted
    assert supervisor.children["inventory"].returncode == kept.result()
