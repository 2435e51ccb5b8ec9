"""The workers' settings: the shared ones plus where the stores live, metrics and game days."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from common.settings import Settings


class WorkerSettings(Settings):
    """Settings of `python -m workers`, read from the environment (and `.env`)."""

    workers_dsn: str | None = Field(
        default=None,
        description="Downstream stores on PostgreSQL (a schema each); default: a SQLite file each.",
    )
    workers_store_dir: Path = Field(default=Path("var/stores"))
    workers_metrics_port: int | None = Field(default=None, description="Worker metrics HTTP port.")
    workers_simulate: bool = Field(
        default=False,
        description="The demo's simulation around each handler: the file's handler_time, and "
        "POISON-/FLAKY<n>- SKUs failing (for the demo, the benchmarks and the tests).",
    )
    workers_outage_dir: Path | None = Field(
        default=None,
        description="Game-day switch: while <dir>/<downstream> exists, that downstream's handler "
        "fails every event transiently (retried through its tiers).",
    )
