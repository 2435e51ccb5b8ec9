"""Redriving dead letters over a fake channel, without a broker: order by order in seq order
whatever the DLQ's order, and each DLQ copy acked only once its publish was confirmed (a
copy whose publish failed stays)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
from aiormq.exceptions import DeliveryError

from events import encode
from events import headers as h
from operations.dlq import DeadLetters, DeadMessage
from tests.support.factories import order_events, received_of
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(10)
ORDERS = {o: order_events(o) for o in ("o-a", "o-b", "o-c")}
# The DLQ as a parked order leaves it: later events blocked behind the first, other orders'
# letters between them, and a redriven order's copies back behind the rest.
QUEUE = [("o-b", 2), ("o-a", 3), ("o-c", 1), ("o-a", 1), ("o-b", 1), ("o-c", 3)]
QUEUE += [("o-b", 3), ("o-a", 2), ("o-c", 2)]


@dataclass
class FakeExchange:
    """The hash exchange: records each publish as (order_id, seq); confirms it at once, or
    when the test says (`hold`), or refuses the ones in `refuse`."""

    hold: bool = False
    refuse: set[tuple[str, int]] = field(default_factory=set)
    published: list[tuple[str, int]] = field(default_factory=list)
    waiting: list[asyncio.Future[None]] = field(default_factory=list)

    async def publish(self, message: aio_pika.Message, routing_key: str) -> None:
        headers = message.headers or {}
        key = (h.order_id_of(headers), h.seq_of(headers))
        self.published.append(key)
        if self.hold:
            self.waiting.append(asyncio.get_running_loop().create_future())
            await self.waiting[-1]
        if key in self.refuse:
            raise DeliveryError(None, None)  # type: ignore[arg-type]

    def confirm_all(self) -> None:
        for fut in self.waiting:
            fut.set_result(None)


@dataclass
class FakeChannel:
    """The publishing channel (hands out the exchange) and a page's channel (records acks)."""

    exchange: FakeExchange = field(default_factory=FakeExchange)
    acks: list[tuple[int, bool]] = field(default_factory=list)

    async def get_exchange(self, name: str, ensure: bool = False) -> FakeExchange:
        return self.exchange

    def ack(self, tag: int, multiple: bool = False) -> None:
        self.acks.append((tag, multiple))

    def acked(self, held: list[int]) -> set[int]:
        """The delivery tags these acks settled, of those held."""
        out: set[int] = set()
        for tag, multiple in self.acks:
            out |= {t for t in held if t <= tag} if multiple else {tag}
        return out


def dead_letters(exchange: FakeExchange) -> tuple[DeadLetters, FakeChannel]:
    """A DLQ read in one page holding QUEUE (delivery tags 1, 2, ... in queue order)."""
    dead = DeadLetters("amqp://unused", "inventory")
    page = FakeChannel()
    channel: Any = FakeChannel(exchange)
    dead._channel = channel
    dead._pages = [page]  # type: ignore[list-item]
    for position, (order_id, seq) in enumerate(QUEUE):
        reason = "non-retryable" if seq == 1 else "blocked-by-predecessor"
        message = encode(ORDERS[order_id][seq - 1])
        message.headers = {**(message.headers or {}), h.DEAD_REASON: reason}
        received = received_of(message, tag=position + 1)
        dead.messages.append(DeadMessage.read(received, 0, position))
    dead._held = [[m.tag for m in dead.messages]]
    return dead, page


def _seqs_by_order(published: list[tuple[str, int]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for order_id, seq in published:
        out.setdefault(order_id, []).append(seq)
    return out


@pytest.mark.parametrize("window", [2, 256])
async def test_redrive_publishes_order_by_order_in_seq_order(window: int) -> None:
    exchange = FakeExchange()
    dead, _ = dead_letters(exchange)
    moved = await dead.redrive(dead.messages, window=window)
    assert len(moved) == len(QUEUE)
    assert _seqs_by_order(exchange.published) == {o: [1, 2, 3] for o in ORDERS}, (
        f"redrive published {exchange.published}: an order's events out of seq order"
    )
    firsts = [exchange.published.index((o, 1)) for o in ORDERS]
    lasts = [exchange.published.index((o, 3)) for o in ORDERS]
    assert all(last - first == 2 for first, last in zip(firsts, lasts, strict=True)), (
        f"redrive interleaved orders: {exchange.published}"
    )


async def test_a_dead_letter_is_acked_only_once_its_redrive_is_confirmed() -> None:
    exchange = FakeExchange(hold=True)
    dead, page = dead_letters(exchange)
    tags = list(dead._held[0])
    redrive = asyncio.create_task(dead.redrive(dead.messages, window=len(QUEUE)))
    await eventually(lambda: len(exchange.waiting) == len(QUEUE), within=3, every=0.01)
    await asyncio.sleep(0.05)
    assert not page.acks, f"DLQ copies acked before their redrive was confirmed: {page.acks}"
    exchange.confirm_all()
    await asyncio.wait_for(redrive, 3)
    assert page.acked(tags) == set(tags)


async def test_a_copy_whose_redrive_failed_stays_in_the_dlq() -> None:
    exchange = FakeExchange(refuse={("o-b", 2)})
    dead, page = dead_letters(exchange)
    tags = list(dead._held[0])
    with pytest.raises(DeliveryError):
        await dead.redrive(dead.messages, window=len(QUEUE))
    refused = next(m.tag for m in dead.messages if (m.order_id, m.seq) == ("o-b", 2))
    assert page.acked(tags) == set(tags) - {refused}
    assert dead._held[0] == [refused]
