"""The order service's settings: the shared ones plus its store and metrics port."""

from __future__ import annotations

from pydantic import Field

from common.settings import Settings


class ProducerSettings(Settings):
    """Settings of `python -m producer`, read from the environment (and `.env`)."""

    producer_dsn: str = Field(
        default="sqlite+aiosqlite:///var/producer.db",
        description="Order store + outbox: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    producer_metrics_port: int | None = Field(default=None, description="Relay metrics HTTP port.")
