"""One downstream's ordering guard and apply step: what happens to each decoded delivery."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from broker.received import Received
from events import AnyEvent, MalformedEvent, decode
from events import headers as h
from events.evolution import UnsupportedVersion
from events.headers import DeadReason
from topology.spec import DownstreamSpec, RetrySpec
from workers.api import Handler
from workers.applying.committer import AlreadyApplied, Committer
from workers.applying.policy import (
    DeadLetter,
    Retry,
    Wait,
    attempts_of,
    dead_headers,
    gap_detail,
    now_ms,
    on_failure,
    on_gap,
)
from workers.applying.progress import ProgressCache
from workers.applying.watchdog import Watchdog
from workers.metrics import DownstreamMetrics
from workers.store.database import DownstreamStore, Progress, WaitingRow

log = structlog.get_logger("workers")
# Held events this process keeps in memory to apply the moment their predecessor applies;
# past this many the sweeper finds the rest in the store (within a second).
HELD_IN_MEMORY = 50_000


class Decoded(Protocol):
    """A received message and its decoded event (or why a newer version could not be read),
    as the guard reads it (the session's delivery)."""

    @property
    def message(self) -> Received: ...
    @property
    def shard(self) -> str: ...
    @property
    def event(self) -> AnyEvent | None: ...
    @property
    def unsupported(self) -> UnsupportedVersion | None: ...
    @property
    def event_id(self) -> str: ...
    @property
    def order_id(self) -> str: ...
    @property
    def seq(self) -> int: ...


@dataclass(slots=True)
class Waited:
    """An event the store held for its predecessor, rebuilt as a delivery (no broker tag:
    settling it is deleting its waiting row)."""

    message: Received
    shard: str
    event: AnyEvent | None
    unsupported: UnsupportedVersion | None
    expires_at_ms: int

    @classmethod
    def of(cls, row: WaitingRow) -> Waited:
        """The delivery a waiting row holds (it was decoded once before it was held)."""
        stamp = row.timestamp_us
        message = Received(
            row.body,
            json.loads(row.headers),
            row.event_id,
            row.message_type,
            row.content_type,
            None if stamp is None else datetime.fromtimestamp(stamp / 1e6, UTC),
            row.app_id,
            0,
            False,
            None,
        )
        try:
            return cls(message, row.shard, decode(message), None, row.expires_at_ms)
        except UnsupportedVersion as exc:
            return cls(message, row.shard, None, exc, row.expires_at_ms)

    @property
    def event_id(self) -> str:
        """The event's id (the row's key)."""
        return str(self.message.message_id)

    @property
    def order_id(self) -> str:
        """The order it belongs to."""
        return (self.event or self.unsupported).order_id  # type: ignore[union-attr]

    @property
    def seq(self) -> int:
        """Its place in the order's life."""
        return (self.event or self.unsupported).seq  # type: ignore[union-attr]


def waiting_row(d: Decoded, since_ms: int, expires_at_ms: int) -> WaitingRow:
    """The waiting row that holds a delivery until its predecessor is applied."""
    m = d.message
    stamp = None if m.timestamp is None else int(m.timestamp.timestamp() * 1e6)
    headers = {k: v for k, v in m.headers.items() if k not in h.BROKER_DEATH_HEADERS}
    return WaitingRow(
        d.event_id,
        d.order_id,
        d.seq,
        d.shard,
        m.body,
        json.dumps(headers, default=_plain),
        m.type,
        m.content_type,
        stamp,
        m.app_id,
        since_ms,
        expires_at_ms,
    )


def _plain(value: object) -> object:
    """A header value JSON cannot hold, as it reads back (text)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class Mover(Protocol):
    """Republishes a delivery's copy to a retry tier or the DLQ, confirmed (the session's
    `Divert`)."""

    async def move(
        self, message: Received, decision: Retry | DeadLetter, context: dict[str, Any]
    ) -> None:
        """Return once the broker confirmed the copy; raise when it did not."""


class OrderingGuard:
    """One downstream's ordering guard and apply step: a delivery is skipped as a duplicate,
    deferred until its predecessor is applied, dead-lettered behind its parked order, or
    applied (the handler, then effect + inbox row + progress in one group commit)."""

    def __init__(
        self,
        name: str,
        retry: RetrySpec,
        *,
        cache: ProgressCache,
        committer: Committer,
        handler: Handler,
        watchdog: Watchdog,
        metrics: DownstreamMetrics,
    ) -> None:
        self.name = name
        self.retry = retry
        self.cache = cache
        self.committer = committer
        self.handler = handler
        self.watchdog = watchdog
        self.metrics = metrics
        self.debug = log.bind().is_enabled_for(logging.DEBUG)  # checked before building a line
        self.held: dict[str, dict[int, Waited]] = {}  # order -> seq -> held in the store
        self.held_count = 0
        self.busy: set[str] = set()  # held events being handled (the sweeper skips them)

    @classmethod
    def for_downstream(
        cls,
        name: str,
        spec: DownstreamSpec,
        store: DownstreamStore,
        handler: Handler,
        cache: ProgressCache,
        metrics: DownstreamMetrics,
    ) -> OrderingGuard:
        """The guard of a downstream as its file sets it: retries, batches, handler timeout."""
        return cls(
            name,
            spec.retry,
            cache=cache,
            committer=Committer.for_downstream(store, handler, spec),
            handler=handler,
            watchdog=Watchdog(spec.handler_timeout / 1000),
            metrics=metrics,
        )

    async def close(self) -> None:
        """Stop the commit loop."""
        await self.committer.close()

    async def handle(self, d: Decoded, divert: Mover) -> None:
        """Skip, hold, apply, retry or dead-letter one decoded delivery; then apply the events
        this process holds for the order that are now next. Then the delivery may settle.

        Raises when the delivery could not be dealt with (it is then handed back).
        """
        await self._step(d, divert)
        while (waited := await self._next_held(d.order_id)) is not None:
            try:
                await self._step(waited, divert)
            except Exception as exc:  # the row stays in the store: the sweeper tries again
                log.warning(
                    "worker.waiting_failed",
                    downstream=self.name,
                    event_id=waited.event_id,
                    error=repr(exc),
                )
                return

    async def _step(self, d: Decoded, divert: Mover) -> None:
        if isinstance(d, Waited):
            if d.event_id in self.busy:
                return
            self.busy.add(d.event_id)
            try:
                await self._one(d, divert)
            finally:
                self.busy.discard(d.event_id)
        else:
            await self._one(d, divert)

    async def _one(self, d: Decoded, divert: Mover) -> None:
        order_id, seq = d.order_id, d.seq
        if d.message.headers.get(h.REAPPLY):
            # A replay into a rebuilt store: its progress, not this process's memory, decides.
            self.cache.forget(order_id)
        progress = await self.cache.get(order_id)
        if seq > progress.last_seq + 1:
            # Before waiting for a predecessor, ask the store: another process (the owner of
            # the shard the order came from) may have applied it since this cache read it.
            self.cache.forget(order_id)
            progress = await self.cache.get(order_id)
        if seq <= progress.last_seq:
            self.metrics.duplicates.inc()
            if self.debug:
                log.debug(
                    "worker.duplicate",
                    downstream=self.name,
                    event_id=d.message.message_id,
                    seq=seq,
                    last_seq=progress.last_seq,
                )
            if self._unheld(d):
                await self.committer.unwait(d.event_id, order_id)
        elif seq > progress.last_seq + 1:
            await self._gap(d, progress, divert)
        elif d.event is None:
            await self._unsupported(d, progress, divert)
        else:
            await self._apply(d, d.event, progress, divert)

    def forget_held(self) -> None:
        """Drop the in-memory index of held events (a session ends: another process may take
        their shards); the store keeps them, and the sweeper finds them."""
        self.held.clear()
        self.held_count = 0

    def is_held(self, event_id: str) -> bool:
        """Whether this event is being handled from the waiting table right now."""
        return event_id in self.busy

    def _hold_in_memory(self, w: Waited) -> None:
        if self.held_count < HELD_IN_MEMORY:
            seqs = self.held.setdefault(w.order_id, {})
            if w.seq not in seqs:
                self.held_count += 1
            seqs[w.seq] = w

    def _unheld(self, d: Decoded) -> bool:
        """Forget d in memory; whether the store holds it (so its row must go)."""
        seqs = self.held.get(d.order_id)
        known = seqs is not None and seqs.pop(d.seq, None) is not None
        if known:
            self.held_count -= 1
            if not seqs:
                del self.held[d.order_id]
        return known or isinstance(d, Waited)

    async def _next_held(self, order_id: str) -> Waited | None:
        """The held event of the order to handle now: the next one, or any behind a parked
        order (they follow it to the DLQ); None when it still waits."""
        seqs = self.held.get(order_id)
        if not seqs:
            return None
        progress = await self.cache.get(order_id)
        ready = [s for s in seqs if s <= progress.last_seq + 1 or progress.parked_event_id]
        if not ready:
            return None
        w = seqs.pop(min(ready))
        self.held_count -= 1
        if not seqs:
            del self.held[order_id]
        return w

    async def _gap(self, d: Decoded, progress: Progress, divert: Mover) -> None:
        """A predecessor has not been applied: wait for it in the store, or dead-letter behind
        a parked one (or once the deferral bound has passed)."""
        detail = gap_detail(
            self.name, d.order_id, d.seq, progress.last_seq, progress.parked_event_id
        )
        parked = progress.parked_event_id is not None
        expires = d.expires_at_ms if isinstance(d, Waited) else None
        decision = on_gap(d.message.headers, parked, self.retry, d.shard, detail, expires)
        if isinstance(decision, DeadLetter):
            await self._divert(d, decision, progress, divert)
            return
        if isinstance(d, Waited):  # still waiting, as it is in the store
            self._hold_in_memory(d)
            return
        await self._hold(d, decision)

    async def _hold(self, d: Decoded, wait: Wait) -> None:
        """Write the delivery into the waiting table (durable before it is acked)."""
        row = waiting_row(d, now_ms(), wait.expires_at_ms)
        await self.committer.hold(row)
        self.metrics.deferred.inc()
        self._hold_in_memory(Waited(d.message, d.shard, d.event, d.unsupported, row.expires_at_ms))
        log.info(
            "worker.waiting",
            downstream=self.name,
            shard=d.shard,
            event_id=d.event_id,
            order_id=d.order_id,
            seq=d.seq,
            until=row.expires_at_ms,
        )

    async def _apply(self, d: Decoded, event: AnyEvent, progress: Progress, divert: Mover) -> None:
        """The order's next event: the handler, then effect + inbox + progress in one commit."""
        started = time.monotonic()
        try:
            await self.watchdog.run(
                self.handler.check(event, attempts_of(d.message.headers)), "handler"
            )
        except Exception as exc:
            decision = on_failure(d.message.headers, exc, self.retry, d.shard)
            await self._divert(d, decision, progress, divert)
            return
        self.metrics.handler_seconds.observe(time.monotonic() - started)
        event_id = d.event_id
        parked = progress.parked_event_id
        after = Progress(event.seq, None if parked == event_id else parked)
        unwait = self._unheld(d)
        try:
            await self.committer.submit(event, event_id, after, unwait=unwait)
        except AlreadyApplied:
            # Applied by an earlier delivery this cache did not see land (a lane of a closed
            # session, another process): the store, not the cache, knows the order's progress.
            self.cache.forget(event.order_id)
            self.metrics.duplicates.inc()
            log.debug("worker.already_applied", downstream=self.name, event_id=event_id)
            if unwait:
                await self.committer.unwait(event_id, event.order_id)
            return
        progress.last_seq, progress.parked_event_id = after.last_seq, after.parked_event_id
        self.metrics.applied.inc()
        if self.debug:
            log.debug("worker.applied", downstream=self.name, event_id=event_id, seq=event.seq)
        self.metrics.end_to_end_seconds.observe(
            (datetime.now(UTC) - event.occurred_at).total_seconds()
        )

    async def _unsupported(self, d: Decoded, progress: Progress, divert: Mover) -> None:
        """The order's next event is of a schema_version this worker cannot read: park the
        order behind it until workers that read it are deployed and redrive it."""
        assert d.unsupported is not None
        reason = DeadReason.UNSUPPORTED_VERSION
        detail = (
            f"order {d.order_id}: seq {d.seq}: {d.unsupported}; the order is parked behind it: "
            f"deploy {self.name} workers that read version {d.unsupported.version}, then "
            f"`python -m topology dlq redrive {self.name} --order-id {d.order_id}` applies "
            "the order's dead-lettered events in seq order"
        )
        headers = dead_headers(d.message.headers, reason, None, d.shard, None, detail)
        await self._divert(d, DeadLetter(reason, headers), progress, divert)

    async def _divert(
        self, d: Decoded, decision: Retry | DeadLetter, progress: Progress | None, divert: Mover
    ) -> None:
        """Republish (confirmed); a dead letter that parks its order is recorded in the store."""
        if isinstance(d, Waited) and not await self.committer.store.is_waiting(d.event_id):
            return  # handled since it was read (by this process's chain or another process)
        context = {
            "downstream": self.name,
            "shard": d.shard,
            "event_id": d.message.message_id,
            "order_id": d.order_id if d.event or d.unsupported else None,
        }
        await divert.move(d.message, decision, context)
        if isinstance(decision, DeadLetter) and decision.parks and progress is not None:
            progress.parked_event_id = d.event_id
            await self.committer.park(d.order_id, progress)
        if (d.event or d.unsupported) and self._unheld(d):
            await self.committer.unwait(d.event_id, d.order_id)

    async def dead_letter_malformed(self, d: Decoded, exc: MalformedEvent, divert: Mover) -> None:
        """A message that is not a valid event goes to the DLQ as malformed."""
        headers = dict(d.message.headers or {})
        reason = DeadReason.MALFORMED
        decision = DeadLetter(
            reason, dead_headers(headers, reason, exc, d.shard, attempts_of(headers))
        )
        await self._divert(d, decision, None, divert)
