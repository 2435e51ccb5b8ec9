"""The three-node cluster of scripts/cluster-up, for the tests that kill and stop its nodes.

The suite starts it when no cluster answers and this machine can (`scripts/cluster-up`: a local
rabbitmq-server run as root, or Docker), and stops what it started at the end. When it cannot,
the cluster tests are skipped with the reason. `BUS_CLUSTER_AMQP_URL` and
`BUS_CLUSTER_MANAGEMENT_URL` point elsewhere (comma lists, in node order).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from broker.management import ManagementClient, ManagementError
from common.settings import addresses
from tests.support.polling import eventually
from topology.replicas import cluster_leaders

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
AMQP_URL = os.environ.get(
    "BUS_CLUSTER_AMQP_URL", ",".join(f"amqp://guest:guest@localhost:568{n}/" for n in (1, 2, 3))
)
MANAGEMENT_URL = os.environ.get(
    "BUS_CLUSTER_MANAGEMENT_URL",
    ",".join(f"http://guest:guest@localhost:1568{n}" for n in (1, 2, 3)),
)
NODES = 3
# How often a wait for spread leaders asks the broker to rebalance again.
REBALANCE_AGAIN = 15.0


class ClusterUnavailable(Exception):
    """No three-node cluster answers and this machine cannot start one; says why."""


@dataclass
class Cluster:
    """Three running nodes, their addresses (node 1, 2, 3 in order) and how to hurt them."""

    amqp_url: str
    management_url: str
    client: ManagementClient

    @property
    def metrics_url(self) -> str:
        """Node 1's Prometheus endpoint (scripts/cluster-up: management 1568n, metrics 1579n)."""
        first = urlsplit(addresses(self.management_url)[0])
        return f"http://{first.hostname}:{(first.port or 15681) + 110}"

    def node_names(self) -> list[str]:
        """Every member's node name, in node order."""
        return sorted(n["name"] for n in self.client.nodes())

    def number(self, node_name: str) -> int:
        """The 1-based number of a node, as scripts/cluster-node takes it."""
        return self.node_names().index(node_name) + 1

    def amqp_of(self, number: int) -> str:
        """The AMQP URL of one node only."""
        return addresses(self.amqp_url)[number - 1]

    def running(self) -> list[str]:
        """The nodes whose RabbitMQ application runs."""
        return sorted(n["name"] for n in self.client.nodes() if n.get("running"))

    async def act(self, number: int, action: str) -> float:
        """scripts/cluster-node N kill|start|stop-app|start-app; returns the seconds it took."""
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            str(SCRIPTS / "cluster-node"),
            str(number),
            action,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _, err = await proc.communicate()
        if proc.returncode != 0:
            raise AssertionError(f"cluster-node {number} {action} failed: {err.decode()}")
        return time.monotonic() - started

    async def spread_leaders(self, within: float) -> Counter[str]:
        """Wait until no running node leads more than its share + 1 of the quorum queues (over
        every vhost, as the broker evens them), asking the broker to rebalance again every
        REBALANCE_AGAIN s meanwhile: on a loaded machine its rebalance can stop short or come
        late. Returns the leaders per node; fails naming them."""
        nodes = self.running()
        asked = time.monotonic()  # the caller's `apply` has just asked

        def spread() -> Counter[str] | None:
            nonlocal asked
            counts = cluster_leaders(self.client, nodes)
            share = -(-sum(counts.values()) // len(nodes))
            if max(counts.values(), default=0) <= share + 1:
                return counts
            if time.monotonic() - asked >= REBALANCE_AGAIN:
                self.client.rebalance_queues()
                asked = time.monotonic()
            return None

        found: Counter[str] = await eventually(
            spread,
            within=within,
            every=1,
            what=f"quorum leaders spread over {nodes}, none leading more than its share + 1",
        )
        return found

    def heal(self) -> None:
        """Every node up with its application running (scripts/cluster-up is idempotent)."""
        if len(self.running()) < NODES:
            _cluster_up()


def _answers(client: ManagementClient) -> bool:
    try:
        return len([n for n in client.nodes() if n.get("running")]) == NODES
    except ManagementError:
        return False


def _cluster_up() -> None:
    done = subprocess.run(
        [str(SCRIPTS / "cluster-up")], capture_output=True, text=True, check=False, timeout=600
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ClusterUnavailable(f"scripts/cluster-up failed: {last}")


@contextlib.contextmanager
def find_cluster() -> Iterator[Cluster]:
    """The cluster, started when needed (and then stopped at the end), or ClusterUnavailable."""
    with ManagementClient(MANAGEMENT_URL, timeout=10) as client:
        started = False
        if not _answers(client):
            if "BUS_CLUSTER_MANAGEMENT_URL" in os.environ:
                raise ClusterUnavailable(f"no three running nodes answer at {MANAGEMENT_URL}")
            if os.geteuid() != 0:
                raise ClusterUnavailable("scripts/cluster-up runs the nodes as root; run as root")
            _cluster_up()
            started = True
            if not _answers(client):
                raise ClusterUnavailable("scripts/cluster-up ran, but three nodes do not answer")
        try:
            yield Cluster(AMQP_URL, MANAGEMENT_URL, client)
        finally:
            if started:
                subprocess.run([str(SCRIPTS / "cluster-down")], capture_output=True, check=False)
