"""AMQP helpers for tests: confirmed publishes, exact depths, draining queues by consumer."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from broker.queues import queue_depth
from events import AnyEvent, encode
from events import headers as h
from tests.support.factories import order_events


async def publish_confirmed(
    channel: AbstractChannel,
    exchange: str,
    messages: Iterable[tuple[str, aio_pika.Message]],
    window: int = 256,
) -> int:
    """Publish (routing_key, message) pairs with up to window confirms in flight."""
    target = await channel.get_exchange(exchange, ensure=False)
    pending: set[asyncio.Future[object]] = set()
    count = 0
    for routing_key, message in messages:
        pending.add(asyncio.ensure_future(target.publish(message, routing_key)))
        count += 1
        if len(pending) >= window:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                fut.result()
    await asyncio.gather(*pending)
    return count


async def publish_to(
    amqp_url: str,
    exchange: str,
    messages: Iterable[tuple[str, aio_pika.Message]],
    window: int = 256,
) -> int:
    """Publish (routing_key, message) pairs to an exchange with confirms, in the given order,
    on a connection of their own."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        return await publish_confirmed(channel, exchange, messages, window)


async def publish_events(amqp_url: str, events: Iterable[AnyEvent]) -> int:
    """Publish events to `orders` with confirms, in the given order."""
    return await publish_to(amqp_url, "orders", ((e.event_type.value, encode(e)) for e in events))


def dead_letter(event: AnyEvent, reason: str | None = None) -> tuple[str, aio_pika.Message]:
    """The event as a worker dead-letters it (for its DLQ's fanout exchange): its created
    event as non-retryable, the later ones as blocked behind it, unless `reason` says."""
    message = encode(event)
    reason = reason or ("non-retryable" if event.seq == 1 else "blocked-by-predecessor")
    message.headers = {**(message.headers or {}), h.DEAD_REASON: reason}
    return "", message


async def depth(amqp_url: str, queue: str) -> int:
    """The exact number of ready messages in a queue, on a connection of its own."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        return await queue_depth(await connection.channel(), queue)


async def take_all(amqp_url: str, queue: str, count: int) -> list[AbstractIncomingMessage]:
    """Consume (and ack) exactly count messages of a queue, e.g. a DLQ, on its own connection."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        return await drain(channel, queue, count)


async def drain(
    channel: AbstractChannel,
    queue: str,
    count: int,
    within: float = 30.0,
    arguments: dict[str, object] | None = None,
) -> list[AbstractIncomingMessage]:
    """Consume exactly count messages from queue, acking them; fail on timeout."""
    received: list[AbstractIncomingMessage] = []
    if count == 0:
        return received
    done = asyncio.get_running_loop().create_future()
    declared = await channel.get_queue(queue, ensure=False)

    async def on_message(message: AbstractIncomingMessage) -> None:
        received.append(message)
        if len(received) % 100 == 0 or len(received) >= count:
            await message.ack(multiple=True)
        if len(received) >= count and not done.done():
            done.set_result(None)

    tag = await declared.consume(on_message, arguments=arguments)
    try:
        await asyncio.wait_for(done, within)
    except TimeoutError:
        raise AssertionError(
            f"{queue}: got {len(received)} of {count} messages in {within}s"
        ) from None
    finally:
        await declared.cancel(tag)
    return received


async def collect_ids(
    channel: AbstractChannel,
    queue: str,
    expected: set[str],
    within: float = 60.0,
    arguments: dict[str, object] | None = None,
) -> Counter[str]:
    """Consume queue until every expected message_id was seen; return how often each came."""
    seen: Counter[str] = Counter()
    done = asyncio.get_running_loop().create_future()
    declared = await channel.get_queue(queue, ensure=False)

    async def on_message(message: AbstractIncomingMessage) -> None:
        seen[message.message_id or ""] += 1
        await message.ack()
        if expected <= seen.keys() and not done.done():
            done.set_result(None)

    tag = await declared.consume(on_message, arguments=arguments)
    try:
        await asyncio.wait_for(done, within)
    except TimeoutError:
        missing = len(expected - seen.keys())
        raise AssertionError(
            f"{queue}: {missing} of {len(expected)} ids missing after {within}s"
        ) from None
    finally:
        await declared.cancel(tag)
    return seen


@dataclass
class SteadyOrders:
    """A steady flow of orders to `orders` until stopped: `per_second` new orders a second,
    each order's events a tick apart (created, paid, shipped), so that at any moment many
    orders are part way through; every order started is finished once stop is set."""

    amqp_url: str
    per_second: float
    prefix: str = "flow"
    tick: float = 0.1
    # Each order reserves SKUs of its own, so no two orders' transactions lock one stock row
    # (a process paused mid-commit then holds up no other process's commits).
    own_stock: bool = False
    orders: list[list[AnyEvent]] = field(default_factory=list)  # every order started
    published: int = 0

    @property
    def events(self) -> int:
        """The events of every order started (once the flow ends, all of them published)."""
        return 3 * len(self.orders)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish wave after wave (with confirms) until stop is set and the last order ends."""
        per_wave = max(1, round(self.per_second * self.tick))
        loop = asyncio.get_running_loop()
        due = loop.time()
        under_way: list[list[list[AnyEvent]]] = []  # the last three waves' new orders
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            while not stop.is_set() or any(under_way):
                first = len(self.orders)
                new = [] if stop.is_set() else [self._order(first + i) for i in range(per_wave)]
                self.orders += new
                under_way = [new, *under_way][:3]
                # The new orders' created events, the wave before's paid, the one before's shipped.
                wave = [order[seq] for seq, orders in enumerate(under_way) for order in orders]
                self.published += await publish_confirmed(
                    channel, "orders", ((e.event_type.value, encode(e)) for e in wave)
                )
                due += self.tick
                await asyncio.sleep(max(0.0, due - loop.time()))

    def _order(self, number: int) -> list[AnyEvent]:
        order_id = f"{self.prefix}-{number:06d}"
        if self.own_stock:
            return order_events(order_id, f"{order_id}-A", f"{order_id}-B")
        return order_events(order_id)
