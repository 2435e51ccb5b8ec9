"""The confirmed publisher over a fake connection: a failed publish moves it to a new channel
(3.10 keeps a channel's quorum client aimed at a leader that is gone), and a publish that was
in flight on the failed channel does not close its successor when it fails late."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import pytest
from aiormq.exceptions import DeliveryError

from workers.session.publisher import ConfirmedPublisher

Step = tuple[BaseException | None, asyncio.Event]  # a publish's outcome, once its gate opens


def _nack() -> DeliveryError:
    return DeliveryError(None, None)  # type: ignore[arg-type]


def _open() -> asyncio.Event:
    gate = asyncio.Event()
    gate.set()
    return gate


class Channel:
    """A channel whose exchange answers each publish with its step."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps
        self.is_closed = False
        self.published = 0

    async def get_underlay_channel(self) -> Channel:
        return self

    async def basic_publish(self, body: bytes, **kwargs: Any) -> None:
        assert kwargs["mandatory"], "an unroutable copy must come back, not vanish"
        assert kwargs["timeout"], "a confirm that never comes must fail the publish"
        self.published += 1
        outcome, gate = self.steps.pop(0)
        await gate.wait()
        if outcome is not None:
            raise outcome

    async def close(self) -> None:
        self.is_closed = True


class Connection:
    """Opens channels in turn, each with its own steps."""

    def __init__(self, *per_channel: list[Step]) -> None:
        self.per_channel = list(per_channel)
        self.channels: list[Channel] = []

    async def channel(self, publisher_confirms: bool, on_return_raises: bool) -> Channel:
        assert publisher_confirms and on_return_raises, "copies must be confirmed, returns raise"
        opened = Channel(self.per_channel.pop(0))
        self.channels.append(opened)
        return opened


def _publisher(connection: Connection) -> ConfirmedPublisher:
    fake: Any = connection
    return ConfirmedPublisher(fake)


MESSAGE = aio_pika.Message(b"{}")


async def test_a_nacked_publish_is_tried_again_on_a_new_channel() -> None:
    connection = Connection([(_nack(), _open())], [(None, _open())])
    publisher = _publisher(connection)
    with pytest.raises(DeliveryError):
        await publisher.publish("inventory.dead", MESSAGE, "")
    await publisher.publish("inventory.dead", MESSAGE, "")
    first, second = connection.channels
    assert first.is_closed and not second.is_closed
    assert (first.published, second.published) == (1, 1)


async def test_a_late_failure_on_a_replaced_channel_leaves_its_successor_open() -> None:
    # Two publishes in flight on channel 1; the first fails and a new publish opens channel
    # 2; then the second fails: it must not close channel 2 under the new publish.
    early, late, fresh = asyncio.Event(), asyncio.Event(), asyncio.Event()
    connection = Connection([(_nack(), early), (_nack(), late)], [(None, fresh)])
    publisher = _publisher(connection)
    sends = [
        asyncio.ensure_future(publisher.publish("inventory.dead", MESSAGE, "")) for _ in range(2)
    ]
    await asyncio.sleep(0)
    early.set()
    with pytest.raises(DeliveryError):
        await sends[0]
    third = asyncio.ensure_future(publisher.publish("inventory.dead", MESSAGE, ""))
    await asyncio.sleep(0)
    late.set()
    with pytest.raises(DeliveryError):
        await sends[1]
    first, second = connection.channels
    assert not second.is_closed, "a late failure on channel 1 closed channel 2"
    fresh.set()
    await third
    assert first.is_closed and second.published == 1
