"""How to start `python -m workers` as a child process: its command line and environment."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path


def worker_command(
    *downstreams: str, metrics_port: int | None = None, file: Path | None = None
) -> list[str]:
    """The command line of a `python -m workers` process for these downstreams."""
    args = [sys.executable, "-m", "workers", *downstreams]
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
    """This process's environment pointed at a broker, a topology file and a store folder,
    with the simulation on (the demo, the benchmarks and the tests launch workers with it)."""
    return {
        **os.environ,
        "WORKERS_SIMULATE": "1",
        "AMQP_URL": amqp_url,
        "TOPOLOGY_FILE": str(topology_file),
        "WORKERS_STORE_DIR": str(store_dir),
        "LOG_LEVEL": log_level,
        **(extra or {}),
    }
