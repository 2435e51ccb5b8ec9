"""Process settings from the environment: what every component shares (broker, TLS, logs).

The producer and the workers extend this class with their own settings
(`producer.settings`, `workers.settings`), read from the same environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self, TypeVar, overload
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound="Settings")


ENV_FILE = ".env"  # read by every settings class, and for the access passwords


class Settings(BaseSettings):
    """Connection and file settings, read from the environment (and `.env`)."""

    model_config = SettingsConfigDict(env_file=ENV_FILE, extra="ignore")

    amqp_url: str = Field(
        default="amqp://guest:guest@localhost:5672/",
        description="AMQP URL; its path is the vhost ('/' or empty means the default vhost). "
        "A cluster: several URLs separated by commas, tried in turn when a node does not answer.",
    )
    amqp_ca_file: Path | None = Field(
        default=None, description="CA bundle that signs the broker's certificate (amqps:// only)."
    )
    amqp_cert_file: Path | None = Field(
        default=None, description="Client certificate for mutual TLS (amqps:// only)."
    )
    amqp_key_file: Path | None = Field(
        default=None, description="The client certificate's private key (amqps:// only)."
    )
    rabbitmq_management_url: str = Field(
        default="http://guest:guest@localhost:15672",
        description="Management HTTP API base URL with credentials (a cluster: several, "
        "separated by commas).",
    )
    rabbitmq_management_ca_file: Path | None = Field(
        default=None,
        description="CA bundle for an https:// management URL (default: AMQP_CA_FILE).",
    )
    topology_file: Path | None = Field(
        default=None, description="The topology file (default: the packaged orders.yaml)."
    )
    log_level: str = "INFO"
    log_json: bool | None = None  # None: console lines on a terminal, JSON lines otherwise

    @model_validator(mode="after")
    def _fold_tls_into_url(self) -> Self:
        files = {"cafile": self.amqp_ca_file, "certfile": self.amqp_cert_file}
        files["keyfile"] = self.amqp_key_file
        given = {k: v for k, v in files.items() if v is not None}
        if not given:
            return self
        if any(urlsplit(u).scheme != "amqps" for u in addresses(self.amqp_url)):
            raise ValueError("AMQP_CA_FILE / AMQP_CERT_FILE / AMQP_KEY_FILE need an amqps:// URL")
        if ("certfile" in given) != ("keyfile" in given):
            raise ValueError("AMQP_CERT_FILE and AMQP_KEY_FILE go together")
        missing = [str(f) for f in given.values() if not f.is_file()]
        if missing:
            raise ValueError(f"TLS file(s) not found: {', '.join(missing)}")
        # aiormq reads cafile/certfile/keyfile from the URL's query, so every component that
        # connects with settings.amqp_url gets the same TLS context.
        params = {k: str(v) for k, v in given.items()}
        self.amqp_url = ",".join(with_query(u, params) for u in addresses(self.amqp_url))
        return self

    @model_validator(mode="after")
    def _urls_agree(self) -> Self:
        vhosts = {vhost_of(u) for u in addresses(self.amqp_url)}
        if len(vhosts) > 1:
            raise ValueError(f"AMQP_URL: the addresses name different vhosts ({sorted(vhosts)})")
        return self

    @property
    def vhost(self) -> str:
        """The vhost named by the AMQP URL's path."""
        return vhost_of(self.amqp_url)

    @property
    def management_ca_file(self) -> Path | None:
        """The CA bundle for an https:// management API (None: the system's)."""
        return self.rabbitmq_management_ca_file or self.amqp_ca_file


class SettingsError(ValueError):
    """The environment holds a setting that cannot be used."""


@overload
def load_settings() -> Settings: ...
@overload
def load_settings(kind: type[S]) -> S: ...
def load_settings(kind: type[Settings] = Settings) -> Settings:
    """Read the settings (of `kind`) from the environment; one readable error for bad values."""
    try:
        return kind()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper() or 'TLS'}: "
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise SettingsError(f"bad setting in the environment: {problems}") from None


def addresses(urls: str) -> list[str]:
    """The URLs of a comma-separated list (one node's URL is a list of one)."""
    return [u.strip() for u in urls.split(",") if u.strip()]


def vhost_of(amqp_url: str) -> str:
    """Return the vhost an AMQP URL (or the first of a list) points at ('' means '/')."""
    first = addresses(amqp_url)
    path = urlsplit(first[0] if first else "").path
    if path in ("", "/"):
        return "/"
    return unquote(path[1:])


def with_query(url: str, params: dict[str, str]) -> str:
    """Return url with params added to its query (params already there are kept)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    return urlunsplit(parts._replace(query=urlencode({**params, **query})))


def without_credentials(url: str) -> str:
    """The first URL of a list, without its user and password: safe to print."""
    parts = urlsplit(addresses(url)[0] if addresses(url) else url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def with_vhost(amqp_url: str, vhost: str) -> str:
    """Return the AMQP URL (each of a list) pointed at another vhost."""
    path = "/" + quote(vhost, safe="")
    return ",".join(urlunsplit(urlsplit(u)._replace(path=path)) for u in addresses(amqp_url))
