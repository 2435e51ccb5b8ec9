"""The relay's window over a fake outbox and a fake broker, without either: it publishes in
outbox order, marks a row sent only once its confirm came, and after a nack or a return
goes back to the first unconfirmed row."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
from aiormq.exceptions import DeliveryError, PublishError

from producer.outbox import OutboxRow
from producer.relay import Relay
from tests.support.polling import eventually

# Each order's events, three orders interleaved as concurrent customers write them.
ROWS = [
    OutboxRow(i, f"e-{i}", f"o-{(i - 1) % 3}", (i - 1) // 3 + 1, "order.created", 0, b"{}")
    for i in range(1, 10)
]
Outcome = BaseException | None  # how the broker answers a publish: confirmed, or an error


def _nack() -> DeliveryError:
    return DeliveryError(None, None)  # type: ignore[arg-type]


def _returned() -> PublishError:
    return PublishError.__new__(PublishError)  # unroutable: returned, not confirmed


@dataclass
class FakeOutbox:
    """The outbox: rows, and which of them the relay has marked sent (and in which calls)."""

    rows: list[OutboxRow]
    sent: set[int] = field(default_factory=set)

    async def fetch_unsent(self, after_id: int, limit: int) -> list[OutboxRow]:
        return [r for r in self.rows if r.id > after_id and r.id not in self.sent][:limit]

    async def fetch_ids(self, ids: list[int]) -> list[OutboxRow]:
        return [r for r in self.rows if r.id in ids and r.id not in self.sent]

    async def mark_sent(self, ids: list[int]) -> None:
        self.sent |= set(ids)

    async def backlog(self) -> int:
        return len(self.rows) - len(self.sent)


@dataclass
class FakeBroker:
    """The relay's exchange: records each publish (by row id) and answers it when told to,
    or at once with `answer(row_id, attempt)`."""

    answer: Callable[[int, int], Outcome] | None = None
    published: list[int] = field(default_factory=list)
    confirmed: set[int] = field(default_factory=set)
    waiting: dict[int, asyncio.Future[Outcome]] = field(default_factory=dict)

    async def publish(self, message: aio_pika.Message, routing_key: str, **_: Any) -> None:
        row = int(str(message.message_id).removeprefix("e-"))
        self.published.append(row)
        if self.answer is not None:
            outcome = self.answer(row, self.published.count(row))
        else:
            self.waiting[row] = asyncio.get_running_loop().create_future()
            outcome = await self.waiting[row]
        if outcome is not None:
            raise outcome
        self.confirmed.add(row)

    def confirm(self, *rows: int) -> None:
        for row in rows:
            self.waiting.pop(row).set_result(None)


@asynccontextmanager
async def pumping(outbox: FakeOutbox, broker: FakeBroker, window: int) -> AsyncIterator[Relay]:
    """The relay's publishing loop running over the fakes for the block; stopped after."""
    relay = Relay(
        outbox,  # type: ignore[arg-type]
        "amqp://unused",
        exchange="orders",
        window=window,
        poll_interval=0.01,
        drain_timeout=0.2,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay._pump(broker, stop))  # type: ignore[arg-type]
    try:
        yield relay
    finally:
        stop.set()
        if broker.waiting:
            broker.confirm(*broker.waiting)
        await asyncio.wait_for(task, 5)


async def _all_sent(outbox: FakeOutbox, broker: FakeBroker) -> None:
    """Wait (3 s at most: the fakes answer at once) until every row is marked sent."""
    try:
        await eventually(lambda: len(outbox.sent) == len(outbox.rows), within=3, every=0.01)
    except AssertionError:
        unsent = sorted({r.id for r in outbox.rows} - outbox.sent)
        raise AssertionError(
            f"rows {unsent} never marked sent; the relay published {broker.published}"
        ) from None


@pytest.mark.timeout(10)
async def test_rows_are_published_in_outbox_order() -> None:
    outbox, broker = FakeOutbox(list(ROWS)), FakeBroker(answer=lambda row, attempt: None)
    async with pumping(outbox, broker, window=4):
        await _all_sent(outbox, broker)
    assert broker.published == [r.id for r in ROWS], "the relay published out of outbox order"
    by_order: dict[str, list[int]] = {}
    for row_id in broker.published:
        row = ROWS[row_id - 1]
        by_order.setdefault(row.order_id, []).append(row.seq)
    assert all(seqs == [1, 2, 3] for seqs in by_order.values()), by_order


@pytest.mark.timeout(10)
async def test_a_row_is_marked_sent_only_once_its_publish_is_confirmed() -> None:
    outbox, broker = FakeOutbox(list(ROWS)), FakeBroker()
    async with pumping(outbox, broker, window=len(ROWS)):
        await eventually(lambda: len(broker.waiting) == len(ROWS), within=5, every=0.01)
        await asyncio.sleep(0.1)  # rounds of the relay's loop, with every confirm outstanding
        assert not outbox.sent, f"rows {sorted(outbox.sent)} marked sent before any confirm"
        broker.confirm(3, 1)  # confirms of a window come in any order
        await eventually(lambda: outbox.sent == {1, 3}, within=5, every=0.01)
        await asyncio.sleep(0.1)
        assert outbox.sent == {1, 3}, "a row marked sent without its confirm"
        broker.confirm(*[r.id for r in ROWS if r.id not in (1, 3)])
        await _all_sent(outbox, broker)
    assert broker.published == [r.id for r in ROWS]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("refusal", [_nack, _returned], ids=["nacked", "returned"])
async def test_after_a_refusal_the_relay_goes_back_to_the_first_unconfirmed_row(
    refusal: Callable[[], BaseException],
) -> None:
    def answer(row: int, attempt: int) -> Outcome:
        return refusal() if row in (4, 7) and attempt == 1 else None

    outbox, broker = FakeOutbox(list(ROWS)), FakeBroker(answer=answer)
    async with pumping(outbox, broker, window=len(ROWS)) as relay:
        await _all_sent(outbox, broker)
    first, again = broker.published[: len(ROWS)], broker.published[len(ROWS) :]
    assert first == [r.id for r in ROWS]
    assert again == [4, 7], f"after the refusals of rows 4 and 7 the relay published {again}"
    assert outbox.sent == broker.confirmed == {r.id for r in ROWS}
    refused = relay.stats.returned if refusal is _returned else relay.stats.nacked
    assert refused == 2
