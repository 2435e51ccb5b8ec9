"""The workers' own consume-only connection against the real broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest

from broker.consumer import AMQPClosed, ConsumerConnection, open_consumer
from broker.queues import queue_depth
from broker.received import Received
from tests.support.fixtures import Vhost
from tests.support.polling import eventually

pytestmark = pytest.mark.integration
QUEUE = "consume-test"


@pytest.fixture
async def queue(vhost: Vhost) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A durable queue in the test vhost; yields a confirming channel that publishes to it."""
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(QUEUE, durable=True)
        yield channel


async def _publish(channel: aio_pika.abc.AbstractChannel, *bodies: bytes, **props: object) -> None:
    for i, body in enumerate(bodies):
        message = aio_pika.Message(body, message_id=f"m-{i}", **props)  # type: ignore[arg-type]
        await channel.default_exchange.publish(message, routing_key=QUEUE)


@pytest.fixture
async def consumer(vhost: Vhost) -> AsyncIterator[ConsumerConnection]:
    connection = await open_consumer(vhost.amqp_url, "test:consumer")
    try:
        yield connection
    finally:
        await connection.close()


async def test_deliveries_arrive_with_their_properties_and_acks_remove_them(
    queue: aio_pika.abc.AbstractChannel, consumer: ConsumerConnection
) -> None:
    headers = {"order_id": "o-1", "seq": 2, "x-attempts": 0, "flag": True, "ratio": 0.5}
    await _publish(queue, b"one", b"two", headers=headers, type="order.paid", app_id="t")
    got: list[Received] = []
    channel = await consumer.channel()
    await channel.qos(10)
    await channel.consume(QUEUE, got.append)
    await eventually(lambda: len(got) == 2, within=10, what="two deliveries")
    assert [m.body for m in got] == [b"one", b"two"]
    assert [m.message_id for m in got] == ["m-0", "m-1"]
    assert got[0].headers == headers and got[0].type == "order.paid" and got[0].app_id == "t"
    assert [m.delivery_tag for m in got] == [1, 2] and not got[0].redelivered
    channel.ack(2, multiple=True)
    await channel.close()
    assert await queue_depth(queue, QUEUE) == 0


async def test_a_nack_requeues_and_the_delivery_comes_back_redelivered(
    queue: aio_pika.abc.AbstractChannel, consumer: ConsumerConnection
) -> None:
    await _publish(queue, b"again")
    got: list[Received] = []
    channel = await consumer.channel()
    await channel.consume(QUEUE, got.append)
    await eventually(lambda: len(got) == 1, within=10, what="the first delivery")
    channel.nack(got[0].delivery_tag)
    await eventually(lambda: len(got) == 2, within=10, what="the redelivery")
    assert got[1].body == b"again" and got[1].redelivered
    channel.ack(got[1].delivery_tag)


async def test_a_body_larger_than_a_frame_is_joined(
    queue: aio_pika.abc.AbstractChannel, consumer: ConsumerConnection
) -> None:
    body = bytes(range(256)) * 2048  # 512 KiB: several body frames
    await _publish(queue, body)
    got: list[Received] = []
    channel = await consumer.channel()
    await channel.consume(QUEUE, got.append)
    await eventually(lambda: got, within=10, what="the large delivery")
    assert got[0].body == body


async def test_unacked_deliveries_go_back_when_the_channel_closes(
    queue: aio_pika.abc.AbstractChannel, consumer: ConsumerConnection
) -> None:
    await _publish(queue, b"a", b"b", b"c")
    got: list[Received] = []
    channel = await consumer.channel()
    await channel.consume(QUEUE, got.append)
    await eventually(lambda: len(got) == 3, within=10, what="three deliveries")
    channel.ack(1)
    await channel.close()
    assert not channel.is_open
    await eventually(lambda: _depth_is(queue, 2), within=10, what="two requeued")


async def _depth_is(channel: aio_pika.abc.AbstractChannel, n: int) -> bool:
    return await queue_depth(channel, QUEUE) == n


async def test_the_broker_cancelling_a_consumer_is_reported(
    queue: aio_pika.abc.AbstractChannel, consumer: ConsumerConnection
) -> None:
    cancelled: list[str] = []
    channel = await consumer.channel()
    tag = await channel.consume(QUEUE, lambda _: None, on_cancel=cancelled.append)
    await queue.queue_delete(QUEUE)
    await eventually(lambda: cancelled == [tag], within=10, what="the cancel notification")
    assert channel.is_open and tag not in channel.consumers


async def test_consuming_a_missing_queue_closes_only_that_channel(
    consumer: ConsumerConnection,
) -> None:
    channel = await consumer.channel()
    with pytest.raises(AMQPClosed) as caught:
        await channel.consume("no-such-queue", lambda _: None)
    assert caught.value.code == 404 and "no-such-queue" in caught.value.text
    assert not channel.is_open and consumer.is_open
    other = await consumer.channel()
    await other.qos(5)
    assert other.is_open


async def test_refused_credentials_are_one_clear_error(vhost: Vhost) -> None:
    parts = urlsplit(vhost.amqp_url)
    wrong = urlunsplit(parts._replace(netloc=f"guest:wrong@{parts.hostname}:{parts.port or 5672}"))
    with pytest.raises(AMQPClosed) as caught:
        await open_consumer(wrong, "test:refused")
    assert caught.value.code == 403 and "ACCESS_REFUSED" in caught.value.text


async def test_the_heartbeat_is_negotiated_and_a_broker_close_is_seen(
    vhost: Vhost, consumer: ConsumerConnection
) -> None:
    assert consumer.heartbeat > 0
    await eventually(
        lambda: [c for c in vhost.client.connections(vhost.name) if "test:consumer" in str(c)],
        within=20,
        what="the connection listed",
    )
    for c in vhost.client.connections(vhost.name):
        vhost.client.close_connection(c["name"], "test: closed by the broker")
    error = await asyncio.wait_for(asyncio.shield(consumer.closed), 10)
    assert isinstance(error, AMQPClosed) and error.code == 320
    assert not consumer.is_open
