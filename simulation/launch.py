"""How the demo, the benchmarks and the tests start simulated worker processes."""

from __future__ import annotations

from pathlib import Path

from workers.process.launch import worker_command

# The program of a simulated worker process: `python -m simulation workers`.
SIMULATED_WORKERS = ("-m", "simulation", "workers")


def simulated_worker_command(
    *downstreams: str, metrics_port: int | None = None, file: Path | None = None
) -> list[str]:
    """The command line of a worker process with the simulation around its handlers."""
    return worker_command(
        *downstreams, metrics_port=metrics_port, file=file, program=SIMULATED_WORKERS
    )
