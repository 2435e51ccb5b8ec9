"""One downstream's ordering guard and apply step: what happens to each decoded delivery."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from broker.received import Received
from events import AnyEvent, MalformedEvent
from events import headers as h
from events.evolution import UnsupportedVersion
from events.headers import DeadReason
from topology.spec import DownstreamSpec, RetrySpec
from workers.api import Handler
from workers.applying.committer import AlreadyApplied, Committer
from workers.applying.policy import (
    DeadLetter,
    Retry,
    attempts_of,
    dead_headers,
    gap_detail,
    on_failure,
    on_gap,
)
from workers.applying.progress import ProgressCache
from workers.applying.watchdog import Watchdog
from workers.metrics import DownstreamMetrics
from workers.store.database import DownstreamStore, Progress

log = structlog.get_logger("workers")


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
        """Skip, defer, apply, retry or dead-letter one decoded delivery; then it may settle.

        Raises when the delivery could not be dealt with (it is then handed back).
        """
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
        elif seq > progress.last_seq + 1:
            await self._gap(d, progress, divert)
        elif d.event is None:
            await self._unsupported(d, progress, divert)
        else:
            await self._apply(d, d.event, progress, divert)

    async def _gap(self, d: Decoded, progress: Progress, divert: Mover) -> None:
        """A predecessor has not been applied: wait for it, or dead-letter behind a parked one."""
        detail = gap_detail(
            self.name, d.order_id, d.seq, progress.last_seq, progress.parked_event_id
        )
        parked = progress.parked_event_id is not None
        decision = on_gap(d.message.headers, parked, self.retry, d.shard, detail)
        if isinstance(decision, Retry):
            self.metrics.deferred.inc()
        await self._divert(d, decision, progress, divert)

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
        try:
            await self.committer.submit(event, event_id, after)
        except AlreadyApplied:
            # Applied by an earlier delivery this cache did not see land (a lane of a closed
            # session, another process): the store, not the cache, knows the order's progress.
            self.cache.forget(event.order_id)
            self.metrics.duplicates.inc()
            log.debug("worker.already_applied", downstream=self.name, event_id=event_id)
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

    async def dead_letter_malformed(self, d: Decoded, exc: MalformedEvent, divert: Mover) -> None:
        """A message that is not a valid event goes to the DLQ as malformed."""
        headers = dict(d.message.headers or {})
        reason = DeadReason.MALFORMED
        decision = DeadLetter(
            reason, dead_headers(headers, reason, exc, d.shard, attempts_of(headers))
        )
        await self._divert(d, decision, None, divert)
