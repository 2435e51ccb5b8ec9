"""Processes the tests start: simulated worker children, and free ports for their metrics."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from simulation.launch import simulated_worker_command
from workers.process.launch import worker_env


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def worker_process(
    amqp_url: str,
    topology: Path,
    store_dir: Path,
    *downstreams: str,
    metrics_port: int | None = None,
    dsn: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m simulation workers ...` as a child process (stores on PostgreSQL when `dsn`
    is given); killed at the end if still running."""
    extra = {"WORKERS_DSN": dsn} if dsn else None
    proc = subprocess.Popen(
        simulated_worker_command(*downstreams, metrics_port=metrics_port),
        env=worker_env(amqp_url, topology, store_dir, extra=extra),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
