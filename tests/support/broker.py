"""Finding a real broker for the suite: an answering AMQP_URL, else a container, else fail."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from broker.management import ManagementClient, ManagementError
from common.settings import Settings, addresses

# Pinned: the suite proves broker behaviour, so the broker version must not drift.
RABBITMQ_IMAGE = "rabbitmq:4.3.7-management"
RABBITMQ_DIR = Path(__file__).resolve().parents[2] / "rabbitmq"
NO_BROKER = (
    "no RabbitMQ broker: none answers at AMQP_URL={url} and no Docker engine answers; "
    "run scripts/broker-up (starts or installs a local rabbitmq-server) or set AMQP_URL"
)


@dataclass(frozen=True)
class Broker:
    """Where the suite's broker answers: AMQP, the management API, Prometheus' scrape."""

    amqp_url: str
    management_url: str
    metrics_url: str


def _answers(settings: Settings) -> bool:
    parts = urlsplit(settings.amqp_url)
    try:
        socket.create_connection((parts.hostname or "localhost", parts.port or 5672), 2).close()
        with ManagementClient(settings.rabbitmq_management_url, timeout=5) as client:
            types = {t["name"] for t in client.overview()["exchange_types"]}
    except (OSError, ManagementError):
        return False
    return "x-consistent-hash" in types


def docker_answers() -> bool:
    """Whether a Docker engine answers here (not only the docker CLI)."""
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def find_broker() -> Iterator[Broker]:
    """Yield a broker for the session, or raise RuntimeError saying how to get one."""
    settings = Settings()
    if _answers(settings):
        # rabbitmq_prometheus listens beside the management API (rabbitmq/rabbitmq.conf).
        host = urlsplit(addresses(settings.rabbitmq_management_url)[0]).hostname or "localhost"
        metrics = os.environ.get("BUS_BROKER_METRICS_URL", f"http://{host}:15692")
        yield Broker(settings.amqp_url, settings.rabbitmq_management_url, metrics)
        return
    if not docker_answers():
        raise RuntimeError(NO_BROKER.format(url=settings.amqp_url))
    with pinned_broker() as pinned:
        yield pinned


@contextlib.contextmanager
def pinned_broker() -> Iterator[Broker]:
    """The pinned RabbitMQ image in a container, with the bus's plugins (needs Docker)."""
    from testcontainers.rabbitmq import RabbitMqContainer

    container = (
        RabbitMqContainer(RABBITMQ_IMAGE)
        .with_exposed_ports(5672, 15672, 15692)
        .with_volume_mapping(str(RABBITMQ_DIR / "enabled_plugins"), "/etc/rabbitmq/enabled_plugins")
    )
    with container:
        host = container.get_container_host_ip()
        amqp = f"amqp://guest:guest@{host}:{container.get_exposed_port(5672)}/"
        mgmt = f"http://guest:guest@{host}:{container.get_exposed_port(15672)}"
        metrics = f"http://{host}:{container.get_exposed_port(15692)}"
        yield Broker(amqp, mgmt, metrics)
