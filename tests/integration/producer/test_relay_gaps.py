"""On PostgreSQL an outbox row can commit after a row with a higher id: the relay, already
past it, still publishes it (before, it stayed unsent until the relay restarted, and its
order's next events waited for it until they were parked)."""

from __future__ import annotations

import asyncio

import pytest

from producer.db import create_schema, make_engine, outbox
from producer.outbox import outbox_values
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.producer import postgres_database, running_relay, wait_for_backlog
from tests.support.settling import in_stream
from topology.spec import TopologySpec

pytestmark = pytest.mark.integration


async def test_a_row_committed_after_a_later_id_is_published(
    vhost: Vhost, fast_spec: TopologySpec
) -> None:
    vhost.apply(fast_spec)
    slow, fast = order_events("ord-slow")[0], order_events("ord-fast")[0]
    async with postgres_database() as dsn:
        engine = make_engine(dsn)
        await create_schema(engine)
        try:
            async with running_relay(engine, vhost.amqp_url, fast_spec) as relay:
                async with engine.connect() as held:
                    transaction = await held.begin()
                    # Takes the lower id, and stays open while a later id commits.
                    await held.execute(outbox.insert().values(**outbox_values(slow)))
                    async with engine.begin() as conn:
                        await conn.execute(outbox.insert().values(**outbox_values(fast)))
                    await eventually(lambda: relay.stats.confirmed == 1, what="the later id sent")
                    await transaction.commit()
                await wait_for_backlog(engine, within=30)
            assert relay.stats.confirmed == 2
        finally:
            await engine.dispose()
    expected = {str(slow.event_id), str(fast.event_id)}
    assert await asyncio.wait_for(in_stream(vhost.amqp_url, fast_spec.log.name, expected), 30)
