"""The suite's fixtures (a pytest plugin): one real broker per session, a fresh vhost per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker.management import ManagementClient
from common.settings import with_vhost
from tests.support import topologies
from tests.support.broker import (
    RABBITMQ_IMAGE,
    Broker,
    docker_answers,
    find_broker,
    pinned_broker,
)
from tests.support.required import skip_or_fail
from topology.apply import apply_plan, plan_against
from topology.compile import compile_topology
from topology.spec import TopologySpec


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    """The suite's broker; stops the whole run with one line when there is none."""
    try:
        with find_broker() as found:
            yield found
    except RuntimeError as exc:
        pytest.exit(str(exc), returncode=3)


@pytest.fixture(scope="session")
def management(broker: Broker) -> Iterator[ManagementClient]:
    """A management API client for the session's broker."""
    with ManagementClient(broker.management_url) as client:
        yield client


@dataclass
class Vhost:
    """A fresh vhost and how to reach it."""

    name: str
    amqp_url: str
    management_url: str
    client: ManagementClient
    metrics_url: str  # the broker's Prometheus endpoint (rabbitmq_prometheus)

    def apply(self, spec: TopologySpec) -> None:
        """Apply a topology spec to this vhost."""
        desired = compile_topology(spec)
        apply_plan(self.client, plan_against(self.client, spec, desired, self.name))

    def env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point the settings of code under test at this vhost."""
        monkeypatch.setenv("AMQP_URL", self.amqp_url)
        monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", self.management_url)


# The brokers a test marked `@pytest.mark.parametrize("vhost", BROKERS, indirect=True)` runs
# on: the suite's own, and the version compose pins (where a Docker engine answers).
LOCAL, PINNED = "local", f"rabbitmq-{RABBITMQ_IMAGE.split(':')[1].split('-')[0]}"
BROKERS = [LOCAL, PINNED]


@pytest.fixture(scope="session")
def pinned() -> Iterator[tuple[Broker, ManagementClient]]:
    """The pinned RabbitMQ image, for the tests that must also pass on it."""
    if not docker_answers():
        skip_or_fail(
            "docker",
            f"no Docker engine answers here: the pinned {RABBITMQ_IMAGE} container cannot run "
            "(where one answers, scripts/test runs these tests on it too)",
        )
    with pinned_broker() as found, ManagementClient(found.management_url) as client:
        yield found, client


@pytest.fixture
def vhost(request: pytest.FixtureRequest) -> Iterator[Vhost]:
    """A vhost created for this test through the management API, deleted after it (on the
    suite's broker, or on the pinned one when the test is parametrized with BROKERS)."""
    if getattr(request, "param", LOCAL) == PINNED:
        broker, management = request.getfixturevalue("pinned")
    else:
        broker, management = (
            request.getfixturevalue("broker"),
            request.getfixturevalue("management"),
        )
    name = f"test-{uuid.uuid4().hex[:12]}"
    management.create_vhost(name)
    try:
        yield Vhost(
            name,
            with_vhost(broker.amqp_url, name),
            broker.management_url,
            management,
            broker.metrics_url,
        )
    finally:
        management.delete_vhost(name)


@pytest.fixture
def fast_spec() -> TopologySpec:
    """The shipped topology with short retry delays."""
    return topologies.spec_of(topologies.fast_data())


@pytest.fixture
def topology_file(tmp_path: Path) -> Any:
    """Write topology data to a file in tmp_path; returns a writer."""

    def write(data: dict[str, Any], name: str = "orders.yaml") -> Path:
        return topologies.write(data, tmp_path / name)

    return write
