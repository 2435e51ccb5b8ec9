"""How to start a worker process as a child: its command line and environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

# The program of a production worker process: `python -m workers`.
WORKERS = ("-m", "workers")


def worker_command(
    *downstreams: str,
    metrics_port: int | None = None,
    file: Path | None = None,
    program: Sequence[str] = WORKERS,
) -> list[str]:
    """The command line of a worker process (`python <program>`) for these downstreams."""
    args = [sys.executable, *program, *downstreams]
    if file is not None:
        args += ["--file", str(file)]
    if metrics_port:
        args += ["--metrics-port", str(metrics_port)]
    return args


def worker_env(
    amqp_url: str,
    topology_file: Path,
    store_dir: Path,
    *,
    log_level: str = "WARNING",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """This process's environment pointed at a broker, a topology file and a store folder."""
    return {
        **os.environ,
        "AMQP_URL": amqp_url,
        "TOPOLOGY_FILE": str(topology_file),
        "WORKERS_STORE_DIR": str(store_dir),
        "LOG_LEVEL": log_level,
        **(extra or {}),
    }
