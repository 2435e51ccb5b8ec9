"""Clients given several broker addresses use the one that answers."""

from __future__ import annotations

import pytest

from broker.connect import connect
from broker.consumer import open_consumer
from broker.management import ManagementClient
from common.settings import with_vhost
from tests.support.fixtures import Vhost

pytestmark = pytest.mark.integration
DOWN_AMQP = "amqp://guest:guest@127.0.0.1:1/"
DOWN_HTTP = "http://guest:guest@127.0.0.1:1"


async def test_amqp_clients_pass_over_a_node_that_does_not_answer(vhost: Vhost) -> None:
    urls = with_vhost(f"{DOWN_AMQP},{vhost.amqp_url}", vhost.name)
    for _ in range(2):  # whichever the rotating start tries first
        publisher = await connect(urls, "test:failover")
        assert not publisher.is_closed
        await publisher.close()
        consumer = await open_consumer(urls, "test:failover")
        assert consumer.is_open
        await consumer.close()


def test_the_management_client_passes_over_a_node_that_does_not_answer(vhost: Vhost) -> None:
    with ManagementClient(f"{DOWN_HTTP},{vhost.management_url}") as client:
        assert client.vhost_exists(vhost.name)
        assert client.base_url.endswith(":15672") or "15672" in client.base_url
