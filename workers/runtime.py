"""One downstream's consuming runtime: shards, per-order lanes, the ordering guard, settling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractExchange
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import DeliveredMessage

from events import AnyEvent, MalformedEvent, decode
from events.codec import republished
from topology import names
from topology.backoff import backoff_delay
from topology.spec import DownstreamSpec, Semantics
from workers.acks import Acker
from workers.committer import AlreadyApplied, Committer
from workers.handlers import Handler
from workers.metrics import WorkerMetrics
from workers.policy import (
    DeadLetter,
    DeadReason,
    Retry,
    attempts_of,
    dead_headers,
    on_failure,
    on_gap,
)
from workers.progress import ProgressCache
from workers.store import DownstreamStore, Progress

log = structlog.get_logger("workers")
DRAIN_SECONDS = 15.0
# Group commit for downstreams without a batch setting: up to this many events, waiting at
# most this long for them (a commit costs about as much for 1 event as for 100).
DEFAULT_COMMIT_BATCH = 500
DEFAULT_COMMIT_LINGER = 0.01


class Incoming:
    """The fields of a delivered message the runtime reads, straight from aiormq's frames."""

    __slots__ = (
        "app_id",
        "body",
        "content_type",
        "delivery_tag",
        "headers",
        "message_id",
        "routing_key",
        "timestamp",
        "type",
    )

    def __init__(self, raw: DeliveredMessage) -> None:
        props = raw.header.properties
        self.body: bytes = raw.body
        self.headers: dict[str, Any] = props.headers or {}
        self.message_id: str | None = props.message_id
        self.type: str | None = props.message_type
        self.content_type: str | None = props.content_type
        self.timestamp: datetime | None = props.timestamp
        self.app_id: str | None = props.app_id
        self.delivery_tag: int = getattr(raw.delivery, "delivery_tag", 0) or 0
        self.routing_key: str | None = raw.routing_key


@dataclass(slots=True)
class Delivery:
    """A received message and where to settle it."""

    message: Incoming
    shard: str
    acker: Acker
    event: AnyEvent | None = None


@dataclass
class _Lane:
    queue: deque[Delivery] = field(default_factory=deque)


class DownstreamWorker:
    """Consumes every shard of one downstream until stopped; reconnects on failure."""

    def __init__(
        self,
        name: str,
        spec: DownstreamSpec,
        amqp_url: str,
        store: DownstreamStore,
        handler: Handler,
        metrics: WorkerMetrics,
    ) -> None:
        self.name = name
        self.spec = spec
        self.amqp_url = amqp_url
        self.store = store
        self.handler = handler
        batch = spec.batch
        self.committer = Committer(
            store,
            handler,
            max_batch=batch.size if batch else DEFAULT_COMMIT_BATCH,
            linger=batch.linger / 1000 if batch else DEFAULT_COMMIT_LINGER,
        )
        self.cache = ProgressCache(store)
        self.slots = asyncio.Semaphore(spec.concurrency)
        self.lanes: dict[str, _Lane] = {}
        self.lane_tasks: set[asyncio.Task[None]] = set()
        self.ack_first = spec.semantics is Semantics.AT_MOST_ONCE
        self._retry_ex: AbstractExchange | None = None
        self._dead_ex: AbstractExchange | None = None
        m = metrics
        self.m_consumed = m.consumed.labels(name)
        self.m_redelivered = m.redelivered.labels(name)
        self.m_applied = m.applied.labels(name)
        self.m_duplicates = m.duplicates.labels(name)
        self.m_deferred = m.deferred.labels(name)
        self.m_in_flight = m.in_flight.labels(name)
        self.m_lag = m.lag.labels(name)
        self.m_scale_out = m.scale_out.labels(name)
        self.m_handler = m.handler_seconds.labels(name)
        self.m_e2e = m.end_to_end_seconds.labels(name)
        self.m_retried = {t: m.retried.labels(name, t) for t in spec.retry.tiers}
        self.m_dead = {r: m.dead.labels(name, r.value) for r in DeadReason}
        self.holding = 0  # deliveries received and not yet settled

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until stop is set; a lost connection starts a new session after backoff."""
        failures = 0
        while not stop.is_set():
            try:
                await self._session(stop)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                delay = backoff_delay(failures, base=0.2, cap=10.0)
                log.warning(
                    "worker.session_failed",
                    downstream=self.name,
                    error=repr(exc),
                    retry_in_s=round(delay, 2),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        await self.committer.close()

    async def _session(self, stop: asyncio.Event) -> None:
        connection = await aio_pika.connect(
            self.amqp_url,
            timeout=10,
            client_properties={
                "connection_name": f"worker:{self.name}:{os.getpid()}",
            },
        )
        ended = asyncio.Event()
        connection.close_callbacks.add(lambda *_: ended.set())
        consumers: list[tuple[RawChannel, str, Acker]] = []
        try:
            # An unroutable retry or dead letter must fail its publish, never be "confirmed"
            # and then have its original acked (aio-pika's default only logs the return).
            publisher = await connection.channel(publisher_confirms=True, on_return_raises=True)
            publisher.close_callbacks.add(lambda *_: ended.set())
            self._retry_ex = await publisher.get_exchange(
                names.retry_exchange(self.name), ensure=False
            )
            self._dead_ex = await publisher.get_exchange(
                names.dead_exchange(self.name), ensure=False
            )
            for i in range(self.spec.shards):
                shard = names.shard(self.name, i)
                channel = await connection.channel()
                channel.close_callbacks.add(lambda *_: ended.set())
                # Consumed at the aiormq level: aio-pika would add a message object and a
                # second task per delivery, a third of a worker's CPU at full speed.
                raw = await channel.get_underlay_channel()
                await raw.basic_qos(prefetch_count=self.spec.prefetch)
                acker = Acker(raw)
                ok = await raw.basic_consume(
                    shard, partial(self._on_message, shard, acker), no_ack=False
                )
                consumers.append((raw, str(ok.consumer_tag), acker))
            sampler = asyncio.create_task(self._sample_lag(publisher))
            log.info(
                "worker.consuming",
                downstream=self.name,
                shards=self.spec.shards,
                prefetch=self.spec.prefetch,
                concurrency=self.spec.concurrency,
            )
            stopping = asyncio.create_task(stop.wait())
            ending = asyncio.create_task(ended.wait())
            await asyncio.wait({stopping, ending}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            ending.cancel()
            sampler.cancel()
            if ended.is_set() and not stop.is_set():
                raise ConnectionError("broker connection or channel closed")
        finally:
            await self._wind_down(consumers)
            with contextlib.suppress(Exception):
                await connection.close()
            self.cache.clear()

    async def _sample_lag(self, channel: Any, every: float = 5.0) -> None:
        """Export the lag (ready in the shards + held here unsettled) for autoscalers."""
        shards = [names.shard(self.name, i) for i in range(self.spec.shards)]
        while True:
            with contextlib.suppress(Exception):
                lag = 0
                for shard in shards:
                    declared = await channel.declare_queue(shard, passive=True)
                    lag += int(declared.declaration_result.message_count or 0)
                lag += self.holding
                self.m_lag.set(lag)
                self.m_scale_out.set(1 if lag > self.spec.scale_out_lag else 0)
            await asyncio.sleep(every)

    async def _wind_down(self, consumers: list[tuple[RawChannel, str, Acker]]) -> None:
        """Stop receiving, let in-flight lanes finish, settle; the rest goes back to the queue."""
        for raw, tag, _ in consumers:
            with contextlib.suppress(Exception):
                await raw.basic_cancel(tag)
        if self.lane_tasks:
            _, pending = await asyncio.wait(set(self.lane_tasks), timeout=DRAIN_SECONDS)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        self.lanes.clear()
        for _, _, acker in consumers:
            await acker.close()

    # --- per delivery --------------------------------------------------------------------

    async def _on_message(self, shard: str, acker: Acker, raw: DeliveredMessage) -> None:
        self.m_consumed.inc()
        redelivered = bool(getattr(raw.delivery, "redelivered", False))
        if redelivered:
            self.m_redelivered.inc()
        self.m_in_flight.inc()
        self.holding += 1
        message = Incoming(raw)
        log.debug(
            "worker.received",
            downstream=self.name,
            shard=shard,
            event_id=message.message_id,
            tag=message.delivery_tag,
            redelivered=redelivered,
        )
        delivery = Delivery(message, shard, acker)
        if self.ack_first:
            acker.complete(message.delivery_tag)
        try:
            delivery.event = decode(message)
        except MalformedEvent as exc:
            await self._dead_letter_malformed(delivery, exc)
            return
        order_id = delivery.event.order_id
        lane = self.lanes.get(order_id)
        if lane is not None:
            lane.queue.append(delivery)
            return
        # The first delivery of an idle order runs its lane in this delivery's own task.
        self.cache.prefetch(order_id)
        lane = self.lanes[order_id] = _Lane(deque([delivery]))
        task = asyncio.current_task()
        if task is not None:
            self.lane_tasks.add(task)
        try:
            await self._run_lane(order_id, lane)
        finally:
            if task is not None:
                self.lane_tasks.discard(task)

    async def _run_lane(self, order_id: str, lane: _Lane) -> None:
        """One order's deliveries, strictly one after another."""
        try:
            async with self.slots:
                while lane.queue:
                    delivery = lane.queue.popleft()
                    try:
                        await self._process(delivery)
                    except Exception as exc:
                        # Not settled: the delivery goes back to the queue (and counts
                        # toward the delivery limit) rather than being lost.
                        log.error(
                            "worker.unhandled",
                            downstream=self.name,
                            shard=delivery.shard,
                            order_id=order_id,
                            error=repr(exc),
                        )
                        self._hand_back(delivery)
        finally:
            if self.lanes.get(order_id) is lane:
                del self.lanes[order_id]

    async def _process(self, d: Delivery) -> None:
        event = d.event
        assert event is not None
        if d.message.headers.get("x-reapply"):
            # A replay into a rebuilt store: its progress, not this process's memory, decides.
            self.cache.forget(event.order_id)
        progress = await self.cache.get(event.order_id)
        if event.seq <= progress.last_seq:
            self.m_duplicates.inc()
            log.debug(
                "worker.duplicate",
                downstream=self.name,
                event_id=d.message.message_id,
                seq=event.seq,
                last_seq=progress.last_seq,
            )
            self._settle(d)
            return
        headers = d.message.headers  # read only: decisions build their own header dicts
        if event.seq > progress.last_seq + 1:
            detail = f"seq {event.seq} arrived after seq {progress.last_seq}"
            if progress.parked_event_id:
                detail += f"; order parked behind event {progress.parked_event_id}"
            decision = on_gap(
                headers, progress.parked_event_id is not None, self.spec.retry, d.shard, detail
            )
            if isinstance(decision, Retry):
                self.m_deferred.inc()
            await self._move(d, decision, progress)
            return
        attempts = attempts_of(headers)
        started = time.monotonic()
        try:
            await self.handler.check(event, attempts)
        except Exception as exc:
            await self._move(d, on_failure(headers, exc, self.spec.retry, d.shard), progress)
            return
        self.m_handler.observe(time.monotonic() - started)
        event_id = str(event.event_id)
        after = Progress(
            event.seq, None if progress.parked_event_id == event_id else progress.parked_event_id
        )
        try:
            await self.committer.submit(event, after)
        except AlreadyApplied:
            # Applied by an earlier delivery this cache did not see land (a lane of a closed
            # session, another process): the store, not the cache, knows the order's progress.
            self.cache.forget(event.order_id)
            self.m_duplicates.inc()
            log.debug("worker.already_applied", downstream=self.name, event_id=event_id)
            self._settle(d)
            return
        progress.last_seq, progress.parked_event_id = after.last_seq, after.parked_event_id
        self.m_applied.inc()
        log.debug("worker.applied", downstream=self.name, event_id=event_id, seq=event.seq)
        self.m_e2e.observe((datetime.now(UTC) - event.occurred_at).total_seconds())
        self._settle(d)

    async def _move(
        self, d: Delivery, decision: Retry | DeadLetter, progress: Progress | None
    ) -> None:
        """Republish to a retry tier or the DLQ, confirmed, then settle the original."""
        message = d.message
        out = republished(message, decision.headers)
        event = d.event
        context = {
            "downstream": self.name,
            "shard": d.shard,
            "event_id": message.message_id,
            "order_id": event.order_id if event else None,
            "attempts": decision.headers.get("x-attempts"),
        }
        assert self._retry_ex is not None and self._dead_ex is not None
        if isinstance(decision, Retry):
            await self._retry_ex.publish(out, routing_key=decision.tier)
            self.m_retried[decision.tier].inc()
            log.info(
                "worker.retry",
                tier=decision.tier,
                deferrals=decision.headers.get("x-deferrals"),
                **context,
            )
        else:
            await self._dead_ex.publish(out, routing_key="")
            self.m_dead[decision.reason].inc()
            log.warning(
                "worker.dead_lettered",
                reason=decision.reason.value,
                error=decision.headers.get("x-error-message"),
                **context,
            )
            if decision.parks and event is not None and progress is not None:
                progress.parked_event_id = str(event.event_id)
                await self.store.set_parked(event.order_id, progress)
        self._settle(d)

    async def _dead_letter_malformed(self, d: Delivery, exc: MalformedEvent) -> None:
        headers = dict(d.message.headers or {})
        decision = DeadLetter(
            DeadReason.MALFORMED,
            dead_headers(headers, DeadReason.MALFORMED, exc, d.shard, attempts_of(headers)),
        )
        try:
            await self._move(d, decision, None)
        except Exception as err:
            log.error(
                "worker.dead_letter_failed", downstream=self.name, shard=d.shard, error=repr(err)
            )
            self._hand_back(d)

    def _settle(self, d: Delivery) -> None:
        self.m_in_flight.dec()
        self.holding -= 1
        if not self.ack_first:
            d.acker.complete(d.message.delivery_tag)

    def _hand_back(self, d: Delivery) -> None:
        self.m_in_flight.dec()
        self.holding -= 1
        if not self.ack_first:
            d.acker.hand_back(d.message.delivery_tag)
