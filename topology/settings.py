"""Process settings from the environment: one class for every component."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TOPOLOGY_FILE = Path(__file__).with_name("orders.yaml")


class Settings(BaseSettings):
    """Connection and file settings, read from the environment (and `.env`)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    amqp_url: str = Field(
        default="amqp://guest:guest@localhost:5672/",
        description="AMQP URL; its path is the vhost ('/' or empty means the default vhost).",
    )
    rabbitmq_management_url: str = Field(
        default="http://guest:guest@localhost:15672",
        description="Management HTTP API base URL with credentials.",
    )
    topology_file: Path = Field(default=DEFAULT_TOPOLOGY_FILE)
    producer_dsn: str = Field(
        default="sqlite+aiosqlite:///var/producer.db",
        description="Order store + outbox: sqlite+aiosqlite:///path or postgresql+asyncpg://...",
    )
    producer_metrics_port: int | None = Field(default=None, description="Relay metrics HTTP port.")
    workers_dsn: str | None = Field(
        default=None,
        description="Downstream stores on PostgreSQL (a schema each); default: a SQLite file each.",
    )
    workers_store_dir: Path = Field(default=Path("var/stores"))
    workers_metrics_port: int | None = Field(default=None, description="Worker metrics HTTP port.")
    log_level: str = "INFO"
    log_json: bool = True

    @property
    def vhost(self) -> str:
        """The vhost named by the AMQP URL's path."""
        return vhost_of(self.amqp_url)


def vhost_of(amqp_url: str) -> str:
    """Return the vhost an AMQP URL points at (an empty path means '/')."""
    path = urlsplit(amqp_url).path
    if path in ("", "/"):
        return "/"
    return unquote(path[1:])


def with_vhost(amqp_url: str, vhost: str) -> str:
    """Return the AMQP URL pointed at another vhost."""
    parts = urlsplit(amqp_url)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))
