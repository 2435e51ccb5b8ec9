"""`docker compose up` as the README gives it, where a Docker engine with compose answers:
the pinned broker, PostgreSQL, the topology, the five downstreams, the relay, Prometheus with
the bus's alert rules and Grafana with its dashboard; 50 orders go through every downstream.

The project's own machines have no Docker engine: the test says so and skips there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.monitoring import alert_rules
from tests.support.polling import eventually
from tests.support.required import skip_or_fail

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ORDERS = 50
PORTS = (
    "BUS_AMQP_PORT",
    "BUS_MANAGEMENT_PORT",
    "BUS_BROKER_METRICS_PORT",
    "BUS_STREAM_PORT",
    "BUS_PROMETHEUS_PORT",
    "BUS_GRAFANA_PORT",
)


def _docker_compose() -> list[str]:
    """The compose command, or a skip saying what is missing."""
    docker = shutil.which("docker")
    if docker is None:
        skip_or_fail("docker", "no docker CLI on this machine")
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        skip_or_fail("docker", "the docker CLI here has no compose plugin")
    if subprocess.run([docker, "info"], capture_output=True).returncode != 0:
        skip_or_fail("docker", "no Docker engine answers on this machine")
    return [docker, "compose"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Stack:
    """One compose project on free host ports (the machine's own broker keeps 5672)."""

    def __init__(self, compose: list[str]) -> None:
        self.project = f"bus-test-{uuid.uuid4().hex[:8]}"
        self.ports = {name: _free_port() for name in PORTS}
        self.base = [*compose, "-p", self.project, "-f", str(ROOT / "docker-compose.yml")]

    def run(self, *args: str, timeout: float = 900) -> str:
        """A compose command; its stdout, or a failure with its stderr."""
        env = {**os.environ, **{k: str(v) for k, v in self.ports.items()}}
        done = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, env=env, timeout=timeout
        )
        assert done.returncode == 0, f"compose {' '.join(args)}:\n{done.stderr[-4000:]}"
        return done.stdout

    def url(self, port: str, path: str) -> str:
        """A URL on one of the stack's published ports."""
        return f"http://127.0.0.1:{self.ports[port]}{path}"


@pytest.fixture
def stack() -> Iterator[Stack]:
    up = Stack(_docker_compose())
    try:
        yield up
    finally:
        up.run("down", "-v", "--remove-orphans", timeout=300)


async def test_the_compose_stack_carries_orders_to_every_downstream_and_is_watched(
    stack: Stack,
) -> None:
    stack.run("up", "-d", "--build", "--wait", "workers", "prometheus", "grafana")
    stack.run(
        "run", "--rm", "producer",
        "python", "-m", "simulation", "orders", "--orders", str(ORDERS), "--seed", "7",
    )  # fmt: skip

    def applied() -> dict[str, float] | None:
        query = stack.url("BUS_PROMETHEUS_PORT", "/api/v1/query")
        expr = "sum by (downstream) (bus_worker_applied_total)"
        result = httpx.get(query, params={"query": expr}, timeout=10).json()["data"]["result"]
        counts = {r["metric"]["downstream"]: float(r["value"][1]) for r in result}
        return counts if len(counts) == 5 and min(counts.values()) >= 3 * ORDERS else None

    counts = await eventually(applied, within=180, every=5, what="every downstream applied")
    assert counts and all(n == 3 * ORDERS for n in counts.values()), counts

    rules = httpx.get(stack.url("BUS_PROMETHEUS_PORT", "/api/v1/rules"), timeout=10).json()
    loaded = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
    assert loaded == {r["alert"] for r in alert_rules()}

    found = httpx.get(
        stack.url("BUS_GRAFANA_PORT", "/api/search"),
        params={"query": "Order event bus"},
        auth=("admin", "admin"),
        timeout=10,
    ).json()
    assert [d["uid"] for d in found] == ["order-event-bus"]
