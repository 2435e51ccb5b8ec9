"""Build and run the workers of one or more downstreams in one process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry

from topology.spec import DownstreamSpec, TopologySpec
from workers.api import Handler, handler_for
from workers.applying.guard import OrderingGuard
from workers.applying.progress import ProgressCache
from workers.metrics import DownstreamMetrics, WorkerMetrics
from workers.process.settings import WorkerSettings
from workers.session.worker import DownstreamWorker
from workers.store.database import DownstreamStore

log = structlog.get_logger("workers")
# What a launcher may put around each downstream's handler (the simulation does).
HandlerWrap = Callable[[str, DownstreamSpec, Handler], Handler]


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
    wrap: HandlerWrap | None = None,
) -> Workers:
    """Open each downstream's store and build its worker, its handler wrapped by `wrap`."""
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
        if wrap is not None:
            handler = wrap(name, ds, handler)
        store = await DownstreamStore.open(
            name,
            handler.metadata,
            settings.workers_dsn,
            settings.workers_store_dir,
            handler.revisions,
        )
        stores.append(store)
        workers.append(worker_of(name, ds, settings.amqp_url, store, handler, metrics))
    return Workers(workers, stores, registry)


def worker_of(
    name: str,
    spec: DownstreamSpec,
    amqp_url: str,
    store: DownstreamStore,
    handler: Handler,
    metrics: WorkerMetrics,
) -> DownstreamWorker:
    """One downstream's worker, with its guard, progress cache and group commit."""
    bound = DownstreamMetrics(metrics, name, spec.retry.tiers)
    cache = ProgressCache(store)
    guard = OrderingGuard.for_downstream(name, spec, store, handler, cache, bound)
    return DownstreamWorker(
        name, spec, amqp_url, store=store, handler=handler, guard=guard, cache=cache, metrics=bound
    )
