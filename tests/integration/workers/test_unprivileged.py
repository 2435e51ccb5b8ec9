"""A worker in a folder it cannot write to, as the image runs it (user `bus` in a root-owned
/app): on PostgreSQL it starts and creates nothing there; on SQLite it stops with one line
that says what to set. The folder is made unwritable to the worker by dropping its capability
to override file permissions (setpriv), which is what an unprivileged user lacks."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulation.launch import simulated_worker_command
from tests.support import topologies
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.processes import free_port
from tests.support.producer import postgres_database
from workers.process.launch import worker_env

pytestmark = pytest.mark.integration
DROP = ["--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder like the image's /app: readable, not writable, by the worker."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to run a worker without write access")
    app = tmp_path / "app"
    app.mkdir()
    app.chmod(0o555)
    yield app
    app.chmod(0o755)


def _env(vhost: Vhost, topology: Path, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = worker_env(vhost.amqp_url, topology, tmp_path, extra=extra)
    del env["WORKERS_STORE_DIR"]  # the default, var/stores under the working folder
    return env


async def test_a_postgresql_worker_needs_no_writable_working_folder(
    vhost: Vhost, read_only_dir: Path, tmp_path: Path, topology_file: Any
) -> None:
    data = topologies.fast_data()
    vhost.apply(topologies.spec_of(data))
    port = free_port()
    async with postgres_database() as dsn:
        proc = subprocess.Popen(
            ["setpriv", *DROP, *simulated_worker_command("inventory", metrics_port=port)],
            env=_env(vhost, topology_file(data), tmp_path, WORKERS_DSN=dsn),
            cwd=read_only_dir,
        )
        try:

            def ready() -> bool:
                assert proc.poll() is None, f"the worker exited with {proc.returncode}"
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).is_success
                except httpx.HTTPError:
                    return False

            await eventually(ready, within=60, what="the worker ready on PostgreSQL")
            proc.terminate()
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert list(read_only_dir.iterdir()) == []


def test_a_sqlite_worker_that_cannot_create_its_store_says_what_to_set(
    vhost: Vhost, read_only_dir: Path, tmp_path: Path, topology_file: Any
) -> None:
    data = topologies.fast_data()
    vhost.apply(topologies.spec_of(data))
    done = subprocess.run(
        ["setpriv", *DROP, *simulated_worker_command("inventory")],
        env=_env(vhost, topology_file(data), tmp_path),
        cwd=read_only_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cannot create the SQLite store folder" in done.stderr
    assert "WORKERS_STORE_DIR" in done.stderr and "WORKERS_DSN" in done.stderr
    assert list(read_only_dir.iterdir()) == []
