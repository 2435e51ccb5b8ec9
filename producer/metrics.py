"""Relay metrics on an injected prometheus registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_CONFIRM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class RelayMetrics:
    """Counters of the relay's publishes and confirms, the backlog, confirm latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, registry=registry)

        self.published = counter(
            "bus_relay_published", "Outbox events published (including retries)"
        )
        self.confirmed = counter("bus_relay_confirmed", "Outbox events confirmed by the broker")
        self.nacked = counter("bus_relay_nacked", "Publishes nacked by the broker")
        self.returned = counter("bus_relay_returned", "Mandatory publishes returned unroutable")
        self.reconnects = counter("bus_relay_reconnects", "Broker connections lost and re-opened")
        self.backlog = Gauge(
            "bus_outbox_backlog", "Outbox rows not yet confirmed", registry=registry
        )
        self.confirm_latency = Histogram(
            "bus_relay_confirm_latency_seconds",
            "Time from publish to broker confirm",
            buckets=_CONFIRM_BUCKETS,
            registry=registry,
        )
