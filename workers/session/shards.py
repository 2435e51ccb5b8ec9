"""The shards one session consumes: taken and given up through leases, started and wound down.

Which shards this process consumes is decided with the downstream's other processes through
leases in the shared store (`workers.ownership`): every round it renews what it holds, gives
up what is beyond its share (after winding that shard down: consumer cancelled, what it holds
finished and acked, channel closed), and takes free shards up to its share. New shards are
found on the broker as they are created; a deleted one is let go.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import structlog

from broker.consumer import AMQPClosed, ConsumerChannel
from broker.queues import depths
from topology import names
from workers.applying.progress import ProgressCache
from workers.ownership.coordinator import Coordinator
from workers.session.acks import STRAGGLER_LIMIT, Acker
from workers.session.connections import Connections
from workers.session.lanes import Lanes

log = structlog.get_logger("workers")
DRAIN_SECONDS = 15.0
SETTLE_GRACE = 0.2  # seconds a wind-down waits after its cancel and after its last acks


@dataclass
class _Shard:
    """A shard this process consumes: its channel, consumer tag and acker."""

    channel: ConsumerChannel
    tag: str
    acker: Acker


class HeldShards:
    """The shards of one downstream this session holds the leases of and consumes."""

    def __init__(
        self,
        downstream: str,
        connections: Connections,
        lanes: Lanes,
        coordinator: Coordinator,
        cache: ProgressCache,
        *,
        count: int,
        prefetch: int,
        on_acked: Callable[[int], None],
    ) -> None:
        self.downstream = downstream
        self.connections = connections
        self.lanes = lanes
        self.coordinator = coordinator
        self.cache = cache
        self.count = count  # shards the broker has: `<d>.0` … `<d>.<count-1>`
        self.prefetch = prefetch
        self.on_acked = on_acked
        self.active: dict[int, _Shard] = {}
        self.stopping: dict[int, asyncio.Task[None]] = {}
        self.closing: set[ConsumerChannel] = set()  # closed by us: not a failure

    @property
    def queues(self) -> list[str]:
        """The downstream's shard queues, as far as this session knows."""
        return [names.shard(self.downstream, i) for i in range(self.count)]

    async def round(self) -> None:
        """Renew and rebalance: stop what was lost or is beyond our share, start what we took."""
        held = set(self.active) | set(self.stopping)
        outcome = await self.coordinator.round(range(self.count), held)
        for shard in outcome.lost:  # another process holds it now: stop at once
            self.stop(shard, release=False)
        for shard in outcome.moves.release:
            self.stop(shard, release=True)
        for shard in set(self.active) - set(range(self.count)):  # deleted on the broker
            self.stop(shard, release=True)
        for shard in outcome.moves.acquire:
            if shard in self.stopping or not await self.coordinator.acquire(shard):
                continue
            # What this process cached about the shard's orders may be stale: another
            # process may have applied their events since.
            self.cache.clear()
            await self.start(shard)

    async def discover(self) -> None:
        """Follow the shards the broker has (created by `apply` growing the downstream, or
        deleted after draining when it shrinks): always `<d>.0` … `<d>.<n-1>`."""
        n = self.count
        while await self._exists(n):
            n += 1
        while n > 1 and not await self._exists(n - 1):
            n -= 1
        if n != self.count:
            log.info("worker.shards_changed", downstream=self.downstream, was=self.count, now=n)
            self.count = n
            self.cache.clear()  # orders moved between shards: trust only the store

    async def _exists(self, index: int) -> bool:
        assert self.connections.publisher is not None
        queue = names.shard(self.downstream, index)
        return (await depths(self.connections.publisher, [queue]))[queue] is not None

    async def start(self, index: int) -> None:
        """Consume one shard on a channel of its own, with the file's prefetch."""
        assert self.connections.consumer is not None
        shard = names.shard(self.downstream, index)
        channel = await self.connections.consumer.channel()
        channel.closed.add_done_callback(partial(self._channel_closed, channel))
        self.closing.add(channel)  # until it consumes: a shard deleted meanwhile is no failure
        await channel.qos(self.prefetch)
        # Completions far past a slow delivery are acked one by one once they would hold
        # half the prefetch window.
        limit = max(STRAGGLER_LIMIT, self.prefetch // 2)
        acker = Acker(channel, straggler_limit=limit, on_acked=self.on_acked)
        try:
            tag = await channel.consume(
                shard,
                partial(self.lanes.on_message, shard, acker),
                on_cancel=lambda _: self.stop(index, release=True),
            )
        except AMQPClosed as exc:
            if exc.code != 404:
                raise
            log.info("worker.shard_gone", downstream=self.downstream, shard=shard)
            await self.coordinator.release(index)
            self.count = min(self.count, index)
            return
        self.closing.discard(channel)
        if not channel.is_open:  # closed while starting: the session starts over
            self.connections.ended.set()
            return
        self.active[index] = _Shard(channel, tag, acker)
        log.info("worker.shard_started", downstream=self.downstream, shard=shard)

    def _channel_closed(self, channel: ConsumerChannel, closed: asyncio.Future[object]) -> None:
        if channel not in self.closing:  # the broker closed it: start a new session
            log.warning(
                "worker.channel_closed",
                downstream=self.downstream,
                channel=channel.number,
                error=repr(closed.result()),
            )
            self.connections.ended.set()

    def stop(self, index: int, release: bool) -> None:
        """Wind a shard down in the background (the rounds go on renewing meanwhile)."""
        held = self.active.pop(index, None)
        if held is not None and index not in self.stopping:
            task = asyncio.create_task(self._wind_down(index, held, release))
            self.stopping[index] = task
            task.add_done_callback(lambda _: self.stopping.pop(index, None))

    async def _wind_down(self, index: int, held: _Shard, release: bool) -> None:
        """Cancel, let what the shard's lanes hold finish and be acked, close; then let go.

        What the shard's next owner receives was never handled here: a delivery still held
        when the channel closes would go back to the queue, and be handled twice.
        """
        shard = names.shard(self.downstream, index)
        with contextlib.suppress(Exception):
            await held.channel.cancel(held.tag)
            # A quorum queue can forward deliveries it dispatched before it read the cancel
            # after the cancel's reply: a round trip and a moment bring them in, to the
            # lanes, before the drain counts what the shard holds.
            await held.channel.qos(self.prefetch)
            await asyncio.sleep(SETTLE_GRACE)
        finished = await self.lanes.drain(shard, DRAIN_SECONDS)
        held.acker.close()
        # A quorum queue can also drop settlements sent just before their channel closes
        # (rabbitmq-server#10327): a round trip shows the broker has read the acks, and a
        # moment lets the queue's client send what it held back.
        with contextlib.suppress(Exception):
            await held.channel.qos(self.prefetch)
            await asyncio.sleep(SETTLE_GRACE)
        self.closing.add(held.channel)
        with contextlib.suppress(Exception):
            await held.channel.close()
        if release:
            with contextlib.suppress(Exception):
                await self.coordinator.release(index)
        log.info("worker.shard_stopped", downstream=self.downstream, shard=shard, drained=finished)

    async def close(self) -> None:
        """Wind every shard down, let the lanes finish, and give the leases up."""
        for index in list(self.active):
            self.stop(index, release=False)
        if self.stopping:
            await asyncio.wait(set(self.stopping.values()))
        await self.lanes.wind_down(DRAIN_SECONDS)
        with contextlib.suppress(Exception):
            # Let the others take over at once rather than when the leases run out.
            await self.coordinator.leave(range(self.count))
