"""Settling a channel's deliveries in few frames: multiple acks over the completed prefix."""

from __future__ import annotations

import asyncio
import contextlib

from aiormq.abc import AbstractChannel as RawChannel
from aiormq.exceptions import AMQPError

STRAGGLER_LIMIT = 64


class Acker:
    """Tracks completed delivery tags of one channel and acks them in batches.

    Tags on a channel are consecutive from 1. The contiguous completed prefix is acked with
    one `multiple=True` frame; when completions far past a slow delivery pile up, they are
    acked one by one so the prefetch window is not held by one lane.
    """

    def __init__(self, channel: RawChannel, every: int = 50, interval: float = 0.01) -> None:
        self.channel = channel
        self.every = every
        self.interval = interval
        self.low = 1  # every tag below this is settled on the broker
        self.done: set[int] = set()  # completed, not yet covered by a multiple ack
        self.singly: set[int] = set()  # completed and already settled one by one
        self.requeue: set[int] = set()  # handed back, nack not sent yet
        self.pending = 0
        self.gone = False  # the channel closed: nothing more can be settled on it
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None

    def complete(self, tag: int) -> None:
        """A delivery is done with: ack it soon."""
        self.done.add(tag)
        self._schedule()

    def hand_back(self, tag: int) -> None:
        """A delivery could not be handled here: requeue it (the broker counts the delivery)."""
        self.done.add(tag)
        self.requeue.add(tag)
        self._schedule()

    def _schedule(self) -> None:
        self.pending += 1
        if self.gone:
            return
        if self.pending >= self.every or self.requeue:
            self._start_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._start_flush)

    def _start_flush(self) -> None:
        self._timer = None
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self.flush())

    async def flush(self) -> None:
        """Send the acks (and requeues) owed to the broker now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pending = 0
        try:
            requeue = sorted(self.requeue)
            self.requeue.difference_update(requeue)
            for tag in requeue:
                await self.channel.basic_nack(tag, requeue=True)
                self.singly.add(tag)
            # A tag handed back while the frames above were on their way is not nacked yet:
            # the prefix stops before it, or the multiple ack would settle it as done.
            high, ack_at = self.low - 1, 0
            while high + 1 in self.done and high + 1 not in self.requeue:
                high += 1
                if high not in self.singly:
                    ack_at = high
            if ack_at:
                await self.channel.basic_ack(ack_at, multiple=True)
            for tag in range(self.low, high + 1):
                self.done.discard(tag)
                self.singly.discard(tag)
            self.low = high + 1
            stragglers = sorted(self.done - self.singly - self.requeue)
            if len(stragglers) >= STRAGGLER_LIMIT:
                for tag in stragglers:
                    await self.channel.basic_ack(tag)
                self.singly.update(stragglers)
        except (AMQPError, ConnectionError, RuntimeError):
            # The channel is gone: the broker requeues everything unacked on it.
            self.gone = True
            return
        if (self.requeue or self.pending) and self._timer is None:
            # Owed while this flush was sending: the timer's flush starts once this one ends.
            delay = 0 if self.requeue else self.interval
            self._timer = asyncio.get_running_loop().call_later(delay, self._start_flush)

    async def close(self) -> None:
        """Flush what is owed and stop."""
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await self._flushing
        await self.flush()
