"""Build and run the workers of one or more downstreams in one process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from prometheus_client import CollectorRegistry

from topology.settings import Settings
from topology.spec import TopologySpec
from workers.handlers import HANDLERS, FaultHook, Handler, OutageSwitch
from workers.metrics import WorkerMetrics
from workers.runtime import DownstreamWorker
from workers.store import DownstreamStore

log = structlog.get_logger("workers")


class UnknownDownstream(ValueError):
    """A downstream name the topology file does not declare."""


@dataclass
class Workers:
    """The running workers of this process."""

    workers: list[DownstreamWorker]
    stores: list[DownstreamStore]
    registry: CollectorRegistry

    async def run(self, stop: asyncio.Event) -> None:
        """Run every downstream until stop is set, then close the stores."""
        try:
            await asyncio.gather(*(w.run(stop) for w in self.workers))
        finally:
            for store in self.stores:
                await store.close()


def choose(spec: TopologySpec, requested: Sequence[str]) -> list[str]:
    """Resolve 'all' or a list of names against the file."""
    if not requested or list(requested) == ["all"]:
        return list(spec.downstreams)
    unknown = [n for n in requested if n not in spec.downstreams]
    if unknown:
        raise UnknownDownstream(
            f"unknown downstream(s) {', '.join(unknown)}; the file declares: "
            f"{', '.join(spec.downstreams)} (or 'all')"
        )
    return list(dict.fromkeys(requested))


async def build(
    spec: TopologySpec,
    names: Sequence[str],
    settings: Settings,
    registry: CollectorRegistry | None = None,
    faults: FaultHook | None = None,
) -> Workers:
    """Open each downstream's store and build its worker."""
    registry = registry or CollectorRegistry()
    metrics = WorkerMetrics(registry)
    workers, stores = [], []
    settings.workers_store_dir.mkdir(parents=True, exist_ok=True)
    for name in choose(spec, names):
        ds = spec.downstreams[name]
        handler_class = HANDLERS.get(name)
        if handler_class is None:
            log.warning(
                "worker.no_handler", downstream=name, note="events are recorded in the inbox only"
            )
        outage = settings.workers_outage_dir
        switch = OutageSwitch(outage / name) if outage else None
        handler = (handler_class or Handler)(ds, faults, switch)
        store = await DownstreamStore.open(
            name, handler.metadata, settings.workers_dsn, settings.workers_store_dir
        )
        stores.append(store)
        workers.append(DownstreamWorker(name, ds, settings.amqp_url, store, handler, metrics))
    return Workers(workers, stores, registry)
