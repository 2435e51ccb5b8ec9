"""A burst of confirmed publishes on a busy event loop: every publish of the burst is written
in the pass it is made. aiormq's outgoing frame queue held 10 frames, and a publish waiting for
room kept its channel's lock: each waiting publish then got the lock one pass of the loop later
(in `workers all` with 5% of orders poisoned, the warehouse's dead letters waited 0.5 s for it
while the broker confirmed in 20 ms, and the ack prefix stood still behind them)."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import pytest

from broker.connect import connect
from broker.queues import depths
from tests.support import topologies
from tests.support.fixtures import Vhost
from topology import names
from workers.session.publisher import ConfirmedPublisher

pytestmark = pytest.mark.integration
BURST = 200
BUSY_PASS = 0.005  # each pass of the loop also does this much work, as a busy worker's does


async def test_a_burst_of_dead_letters_is_confirmed_in_a_few_passes_of_a_busy_loop(
    vhost: Vhost,
) -> None:
    spec = topologies.spec_of(topologies.fast_data())
    vhost.apply(spec)
    connection = await connect(vhost.amqp_url, "test:publisher")
    loop = asyncio.get_running_loop()
    passes = 0
    busy = True

    def work() -> None:
        nonlocal passes
        passes += 1
        time.sleep(BUSY_PASS)
        if busy:
            loop.call_soon(work)

    try:
        publisher = ConfirmedPublisher(connection)
        dead = names.dead_exchange("inventory")
        await publisher.publish(dead, aio_pika.Message(b"{}", message_id="warm-up"), "")
        body = b"x" * 2000  # a dead letter's size, headers and stack included
        loop.call_soon(work)
        await asyncio.gather(
            *(
                publisher.publish(dead, aio_pika.Message(body, message_id=f"m-{i}"), "")
                for i in range(BURST)
            )
        )
        busy = False
        stored = (await depths(connection, [names.dlq("inventory")]))[names.dlq("inventory")]
    finally:
        busy = False
        await connection.close()
    # Written in the first pass, the burst is confirmed while the loop waits for the broker;
    # a lock handed on once a pass takes a pass per publish.
    assert passes < BURST // 4, f"{BURST} confirmed publishes took {passes} passes of the loop"
    assert stored == BURST + 1
