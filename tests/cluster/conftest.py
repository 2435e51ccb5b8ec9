"""Fixtures of the cluster tests: the cluster lives for this package only, so the rest of the
suite does not share two cores with three idle nodes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from common.settings import with_vhost
from tests.support.cluster import Cluster, ClusterUnavailable, find_cluster
from tests.support.fixtures import Vhost
from tests.support.required import skip_or_fail


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    """The three-node cluster (started when needed and stopped after this package), or the
    test is skipped with the reason this machine cannot run one."""
    try:
        with find_cluster() as found:
            yield found
    except ClusterUnavailable as exc:
        skip_or_fail("cluster", f"no three-node RabbitMQ cluster: {exc}")


@pytest.fixture
def cluster_vhost(cluster: Cluster) -> Iterator[Vhost]:
    """A fresh vhost on the cluster; afterwards every node runs again and the vhost is gone."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    cluster.client.create_vhost(name)
    try:
        yield Vhost(
            name,
            with_vhost(cluster.amqp_url, name),
            cluster.management_url,
            cluster.client,
            cluster.metrics_url,
        )
    finally:
        cluster.heal()
        cluster.client.delete_vhost(name)
