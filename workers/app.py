"""Build and run the workers of one or more downstreams in one process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry

from topology.spec import TopologySpec
from workers.consumer import DownstreamWorker
from workers.handlers import Handler, handler_for
from workers.metrics import DownstreamMetrics, WorkerMetrics
from workers.runtime import Runtime
from workers.settings import WorkerSettings
from workers.simulated import FaultHook, OutageSwitch, Simulated
from workers.store import DownstreamStore

log = structlog.get_logger("workers")


@dataclass
class Workers:
    """The running workers of this process."""

    workers: list[DownstreamWorker]
    stores: list[DownstreamStore]
    registry: CollectorRegistry

    def health(self) -> tuple[bool, bool]:
        """Alive when every downstream is connected; ready when each consumes its shards."""
        states = [w.health() for w in self.workers]
        return all(a for a, _ in states), all(r for _, r in states)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every downstream until stop is set, then close the stores."""
        try:
            await asyncio.gather(*(w.run(stop) for w in self.workers))
        finally:
            for store in self.stores:
                await store.close()


async def build(
    spec: TopologySpec,
    names: Sequence[str],
    settings: WorkerSettings,
    registry: CollectorRegistry | None = None,
    faults: FaultHook | None = None,
) -> Workers:
    """Open each downstream's store and build its worker."""
    registry = registry or CollectorRegistry()
    metrics = WorkerMetrics(registry)
    workers, stores = [], []
    for name in spec.choose(names):
        ds = spec.downstreams[name]
        handler = handler_for(name, ds)
        if type(handler) is Handler:
            log.warning(
                "worker.no_handler", downstream=name, note="events are recorded in the inbox only"
            )
        outage = settings.workers_outage_dir
        if settings.workers_simulate or faults is not None or outage is not None:
            switch = OutageSwitch(outage / name) if outage else None
            handler = Simulated(handler, ds, faults, switch)
        store = await DownstreamStore.open(
            name,
            handler.metadata,
            settings.workers_dsn,
            settings.workers_store_dir,
            handler.revisions,
        )
        stores.append(store)
        bound = DownstreamMetrics(metrics, name, ds.retry.tiers)
        runtime = Runtime(name, ds, store, handler, bound)
        workers.append(DownstreamWorker(runtime, settings.amqp_url))
    return Workers(workers, stores, registry)
