"""Worker metrics per downstream, on an injected prometheus registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class WorkerMetrics:
    """Counters, gauges and histograms labelled by downstream."""

    def __init__(self, registry: CollectorRegistry) -> None:
        label = ["downstream"]
        self.consumed = Counter(
            "bus_worker_consumed", "Deliveries received", label, registry=registry
        )
        self.redelivered = Counter(
            "bus_worker_redelivered",
            "Deliveries the broker marked redelivered (a consumer died or closed holding them)",
            label,
            registry=registry,
        )
        self.applied = Counter("bus_worker_applied", "Events applied", label, registry=registry)
        self.duplicates = Counter(
            "bus_worker_duplicates", "Deliveries already applied", label, registry=registry
        )
        self.deferred = Counter(
            "bus_worker_deferred",
            "Events deferred for a missing predecessor",
            label,
            registry=registry,
        )
        self.retried = Counter(
            "bus_worker_retried", "Events sent to a retry tier", [*label, "tier"], registry=registry
        )
        self.dead = Counter(
            "bus_worker_dead_lettered",
            "Events sent to the DLQ",
            [*label, "reason"],
            registry=registry,
        )
        self.lag = Gauge(
            "bus_worker_lag_messages",
            "Messages waiting in the downstream's shards",
            label,
            registry=registry,
        )
        self.scale_out = Gauge(
            "bus_worker_scale_out_recommended",
            "1 when the lag passes the file's scale_out_lag",
            label,
            registry=registry,
        )
        self.in_flight = Gauge(
            "bus_worker_in_flight", "Deliveries received and not settled", label, registry=registry
        )
        self.handler_seconds = Histogram(
            "bus_worker_handler_seconds",
            "Handler time per event",
            label,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.end_to_end_seconds = Histogram(
            "bus_worker_end_to_end_seconds",
            "Applied time minus the event's occurred_at",
            label,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
