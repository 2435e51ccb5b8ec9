"""The broker's per-queue metrics, scraped as monitoring/prometheus.yml scrapes them, carry
every rabbitmq_ metric the dashboard and the alert rules read, for the bus's queues."""

from __future__ import annotations

import httpx
import pytest

from tests.support import monitoring as mon
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from topology import names
from topology.spec import TopologySpec

pytestmark = pytest.mark.integration


async def test_the_per_queue_scrape_has_what_the_dashboard_and_alerts_read(
    vhost: Vhost, fast_spec: TopologySpec
) -> None:
    vhost.apply(fast_spec)
    path, params = mon.detailed_scrape()
    url = f"{vhost.metrics_url}{path}"  # the broker under test, wherever it is
    wanted = set().union(*(mon.metric_names(e) for e in mon.expressions()))
    broker_names = {n for n in wanted if n.startswith("rabbitmq_detailed_")}
    assert broker_names
    # The node-wide ones (the alarms) come from the aggregated endpoint.
    node_names = {n for n in wanted if n.startswith("rabbitmq_") and n not in broker_names}
    node = httpx.get(f"{vhost.metrics_url}/metrics", timeout=10).text
    assert node_names and all(f"\n{n} " in node or node.startswith(f"{n} ") for n in node_names)

    def scraped() -> dict[str, set[str]]:
        text = httpx.get(url, params={**params, "vhost": vhost.name}, timeout=10).text
        queues: dict[str, set[str]] = {}
        for line in text.splitlines():
            if line.startswith("rabbitmq_detailed_") and f'vhost="{vhost.name}"' in line:
                name, labels = line.split("{", 1)
                queue = labels.split('queue="', 1)[1].split('"', 1)[0]
                queues.setdefault(name, set()).add(queue)
        return queues

    # Every downstream's shards and DLQ, which the expressions' queue patterns select.
    ours = {names.shard(d, i) for d, ds in fast_spec.downstreams.items() for i in range(ds.shards)}
    ours |= {names.dlq(d) for d in fast_spec.downstreams}

    def complete() -> bool:
        queues = scraped()
        return all(ours <= queues.get(name, set()) for name in broker_names)

    # The broker emits a new queue's series once it has collected its first statistics.
    await eventually(complete, within=60, what=f"{sorted(broker_names)} of every bus queue")
