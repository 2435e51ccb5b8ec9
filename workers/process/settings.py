"""The workers' settings: the shared ones plus where the stores live and metrics."""

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
