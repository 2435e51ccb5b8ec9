"""Worker metrics per downstream (on an injected registry), and the lag sampler.

Counters bumped for every event are plain integers (`Tally`) that prometheus reads when it
collects: a prometheus counter takes a lock on every increment, which costs a worker a few
per cent of its CPU at full speed. Gauges and histograms are prometheus' own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence

from aio_pika.abc import AbstractConnection
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from broker.queues import depths
from events.headers import DeadReason

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_BY_DOWNSTREAM = ["downstream"]


class Tally:
    """One labelled counter's value: `inc` is an integer addition."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        """Add to the count."""
        self.value += amount


class Tallies(Collector):
    """A counter family whose children are Tallies, collected by prometheus on scrape."""

    def __init__(self, name: str, doc: str, labels: Sequence[str]) -> None:
        self.name, self.doc, self.labelnames = name, doc, list(labels)
        self.children: dict[tuple[str, ...], Tally] = {}

    def labels(self, *values: str) -> Tally:
        """The child of these label values (made on first use)."""
        return self.children.setdefault(tuple(values), Tally())

    def describe(self) -> Iterator[CounterMetricFamily]:
        """The family without samples (for the registry's name checks)."""
        yield CounterMetricFamily(self.name, self.doc, labels=self.labelnames)

    def collect(self) -> Iterator[CounterMetricFamily]:
        """Every child's value."""
        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, tally in list(self.children.items()):
            family.add_metric(list(values), tally.value)
        yield family


class WorkerMetrics:
    """Counters, gauges and histograms labelled by downstream."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, *labels: str) -> Tallies:
            family = Tallies(name, doc, [*_BY_DOWNSTREAM, *labels])
            registry.register(family)
            return family

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, _BY_DOWNSTREAM, registry=registry)

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, _BY_DOWNSTREAM, buckets=_LATENCY_BUCKETS, registry=registry)

        self.consumed = counter("bus_worker_consumed", "Deliveries received")
        self.redelivered = counter(
            "bus_worker_redelivered",
            "Deliveries the broker marked redelivered (a consumer died or closed holding them)",
        )
        self.applied = counter("bus_worker_applied", "Events applied")
        self.acked = counter(
            "bus_worker_acked",
            "Deliveries acked: applied, duplicate, deferred, or moved to a retry tier or the DLQ",
        )
        self.duplicates = counter("bus_worker_duplicates", "Deliveries already applied")
        self.deferred = counter("bus_worker_deferred", "Events deferred for a missing predecessor")
        self.retried = counter("bus_worker_retried", "Events sent to a retry tier", "tier")
        self.dead = counter("bus_worker_dead_lettered", "Events sent to the DLQ", "reason")
        self.republish_nacked = counter(
            "bus_worker_republish_nacked",
            "Retry or DLQ republishes the broker nacked (tried again in place)",
        )
        self.lag = gauge("bus_worker_lag_messages", "Messages waiting in the downstream's shards")
        self.scale_out = gauge(
            "bus_worker_scale_out_recommended", "1 when the lag passes the file's scale_out_lag"
        )
        self.in_flight = gauge("bus_worker_in_flight", "Deliveries received and not settled")
        self.waiting = gauge(
            "bus_worker_waiting",
            "Events held in the downstream's store (table waiting) for their predecessor",
        )
        self.forwarded = counter(
            "bus_worker_retry_forwarded",
            "Retried events brought back from a retry tier to their shard when due",
        )
        self.shards_owned = gauge(
            "bus_worker_shards_owned", "Shards this process holds the lease of and consumes"
        )
        self.handler_seconds = histogram("bus_worker_handler_seconds", "Handler time per event")
        self.end_to_end_seconds = histogram(
            "bus_worker_end_to_end_seconds", "Applied time minus the event's occurred_at"
        )


class DownstreamMetrics:
    """One downstream's metric children, bound once (a `labels()` call costs on every event)."""

    def __init__(self, m: WorkerMetrics, downstream: str, tiers: Iterable[str]) -> None:
        self.consumed = m.consumed.labels(downstream)
        self.redelivered = m.redelivered.labels(downstream)
        self.applied = m.applied.labels(downstream)
        self.acked = m.acked.labels(downstream)
        self.duplicates = m.duplicates.labels(downstream)
        self.deferred = m.deferred.labels(downstream)
        self.in_flight = m.in_flight.labels(downstream)
        self.waiting = m.waiting.labels(downstream)
        self.forwarded = m.forwarded.labels(downstream)
        self.shards_owned = m.shards_owned.labels(downstream)
        self.lag = m.lag.labels(downstream)
        self.scale_out = m.scale_out.labels(downstream)
        self.handler_seconds = m.handler_seconds.labels(downstream)
        self.end_to_end_seconds = m.end_to_end_seconds.labels(downstream)
        self.retried = {t: m.retried.labels(downstream, t) for t in tiers}
        self.republish_nacked = m.republish_nacked.labels(downstream)
        self.dead = {r: m.dead.labels(downstream, r.value) for r in DeadReason}


async def sample_lag(
    connection: AbstractConnection,
    shards: Callable[[], Sequence[str]],
    holding: Callable[[], int],
    metrics: DownstreamMetrics,
    scale_out_at: int,
    every: float = 5.0,
) -> None:
    """Export the lag (ready in the shards + held unsettled here) until cancelled."""
    while True:
        with contextlib.suppress(Exception):
            ready = await depths(connection, list(shards()))
            lag = sum(n or 0 for n in ready.values()) + holding()
            metrics.lag.set(lag)
            metrics.scale_out.set(1 if lag > scale_out_at else 0)
        await asyncio.sleep(every)
