"""Settling a channel's deliveries in few frames: multiple acks over the completed prefix."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

STRAGGLER_LIMIT = 64
# A delivery that blocks the prefix is waited for this long before completions past it are
# acked one by one: a republish's confirm takes milliseconds, and on a quorum queue each single
# ack is a log entry of its own where a multiple ack settles hundreds in one.
STRAGGLER_PATIENCE = 0.1


class Settles(Protocol):
    """A channel that settles deliveries by tag, at once (`common.consuming`)."""

    def ack(self, tag: int, multiple: bool = False) -> None:
        """Acknowledge a delivery (and all before it with multiple)."""

    def nack(self, tag: int, requeue: bool = True) -> None:
        """Hand a delivery back to its queue."""


class Acker:
    """Tracks the completed delivery tags of one channel and acks them in batches.

    Tags on a channel are consecutive from 1. The contiguous completed prefix is acked with
    one `multiple=True` frame; when completions far past a slow delivery pile up, they are
    acked one by one so the prefetch window is not held by one lane. A delivery handed back
    is nacked at once, so a later multiple ack can never cover it as done.
    """

    def __init__(
        self,
        channel: Settles,
        every: int = 50,
        interval: float = 0.01,
        straggler_limit: int = STRAGGLER_LIMIT,
        patience: float = STRAGGLER_PATIENCE,
        on_acked: Callable[[int], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.channel = channel
        self.on_acked = on_acked  # told how many deliveries each flush acked
        self.every = every
        self.straggler_limit = straggler_limit
        self.patience = patience
        self.clock = clock or asyncio.get_running_loop().time
        self._blocked_since: float | None = None  # when the prefix last stopped short
        self.interval = interval
        self.low = 1  # every tag below this is settled on the broker
        self.done: set[int] = set()  # completed, not yet covered by a multiple ack
        self.singly: set[int] = set()  # completed and already settled one by one
        self.pending = 0
        self.gone = False  # the channel closed: nothing more can be settled on it
        self._timer: asyncio.TimerHandle | None = None

    def complete(self, tag: int) -> None:
        """A delivery is done with: ack it soon."""
        self.done.add(tag)
        self.pending += 1
        if self.pending >= self.every:
            self.flush()
        elif self._timer is None and not self.gone:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def hand_back(self, tag: int) -> None:
        """A delivery could not be handled here: requeue it (the broker counts the delivery)."""
        self._settle(self.channel.nack, tag)
        self.done.add(tag)
        self.complete_prefix()

    def complete_prefix(self) -> None:
        """Ack the completed prefix soon (a hand-back may have closed a gap)."""
        if self._timer is None and not self.gone:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Send the acks owed to the broker now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pending = 0
        if self.gone:
            return
        high, ack_at, acked = self.low - 1, 0, 0
        while high + 1 in self.done:
            high += 1
            if high not in self.singly:
                ack_at = high
                acked += 1
        if ack_at:
            self._settle(lambda tag: self.channel.ack(tag, multiple=True), ack_at)
        for tag in range(self.low, high + 1):
            self.done.discard(tag)
            self.singly.discard(tag)
        advanced = high >= self.low
        self.low = high + 1
        stragglers = sorted(self.done - self.singly)
        now = self.clock()
        if not stragglers:
            self._blocked_since = None
        elif self._blocked_since is None or advanced:
            # Patience is per blocking delivery: a prefix that moves is not stuck.
            self._blocked_since = now
        if (
            self._blocked_since is not None
            and len(stragglers) >= self.straggler_limit
            and now - self._blocked_since >= self.patience
        ):
            for tag in stragglers:
                self._settle(self.channel.ack, tag)
            acked += len(stragglers)
        elif stragglers and self._timer is None:
            # Look again once the patience is up, if nothing else flushes before.
            self._timer = asyncio.get_running_loop().call_later(self.patience, self.flush)
        if acked and self.on_acked is not None and not self.gone:
            self.on_acked(acked)

    def _settle(self, send: Callable[[int], None], tag: int) -> None:
        if self.gone:
            return
        try:
            send(tag)
        except ConnectionError:
            # The channel is gone: the broker requeues everything unacked on it.
            self.gone = True
            return
        self.singly.add(tag)

    def close(self) -> None:
        """Send what is owed and stop."""
        self.flush()
        self.gone = True
