"""`python -m topology` as a shell runs it: a closed pipe and Ctrl-C end it quietly."""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import sys

import pytest

from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from topology.spec import TopologySpec

pytestmark = pytest.mark.integration


def _topology(vhost: Vhost, *args: str, stdout: int = subprocess.PIPE) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "AMQP_URL": vhost.amqp_url,
        "RABBITMQ_MANAGEMENT_URL": vhost.management_url,
        "COLUMNS": "200",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "topology", *args],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
    )


def test_export_into_a_pipe_closed_early_exits_zero_without_an_error(vhost: Vhost) -> None:
    proc = _topology(vhost, "export")
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == b"{"  # what `| head -1` reads, then it goes
    proc.stdout.close()
    code = proc.wait(30)
    err = proc.stderr.read().decode()
    assert code == 0, err
    assert "failed" not in err and "Traceback" not in err, err


async def test_ctrl_c_on_status_watch_exits_130_without_a_traceback(
    vhost: Vhost, fast_spec: TopologySpec
) -> None:
    vhost.apply(fast_spec)
    # On a terminal, as an operator watches it (rich draws live only there).
    terminal, screen = pty.openpty()
    proc = _topology(vhost, "status", "--watch", "--interval", "0.5", stdout=screen)
    os.close(screen)
    assert proc.stderr is not None
    os.set_blocking(terminal, False)
    drawn = b""

    def watching() -> bool:
        nonlocal drawn
        with contextlib.suppress(BlockingIOError):
            drawn += os.read(terminal, 65536)
        return b"inventory" in drawn

    try:
        await eventually(watching, within=30, what="the status table on the terminal")
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    finally:
        os.close(terminal)
        proc.kill()
    err = proc.stderr.read().decode()
    assert code == 130, err
    assert "Traceback" not in err, err
