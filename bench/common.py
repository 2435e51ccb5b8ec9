"""Shared benchmark plumbing: a throwaway vhost with the topology applied, machine facts."""

from __future__ import annotations

import asyncio
import os
import platform
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from broker.connect import connect
from broker.management import ManagementClient
from common.settings import Settings, with_vhost
from events import AnyEvent, encode
from topology.apply import apply_plan, plan_against
from topology.compile import compile_topology
from topology.spec import TopologySpec, load_spec
from workers.process.launch import worker_env


@dataclass(frozen=True)
class Target:
    """A broker to measure on: one node or a cluster (comma-separated URLs)."""

    name: str
    amqp_url: str
    management_url: str


def settings_target() -> Target:
    """The broker of AMQP_URL and RABBITMQ_MANAGEMENT_URL."""
    settings = Settings()
    return Target("broker", settings.amqp_url, settings.rabbitmq_management_url)


@contextmanager
def fresh_vhost(
    spec: TopologySpec | None = None, target: Target | None = None
) -> Iterator[tuple[str, TopologySpec]]:
    """A new vhost with the topology applied; yields its AMQP URL and the spec."""
    settings = Settings()
    spec = spec or load_spec(settings.topology_file)
    target = target or settings_target()
    name = f"bench-{uuid.uuid4().hex[:10]}"
    with ManagementClient(target.management_url, ca_file=settings.management_ca_file) as client:
        apply_plan(client, plan_against(client, spec, compile_topology(spec), name))
        try:
            yield with_vhost(target.amqp_url, name), spec
        finally:
            client.delete_vhost(name)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    settings = Settings()
    with ManagementClient(
        settings.rabbitmq_management_url, ca_file=settings.management_ca_file
    ) as client:
        overview = client.overview()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "rabbitmq": overview.get("rabbitmq_version"),
        "erlang": overview.get("erlang_version"),
    }


def workers_env(amqp_url: str, data: Any, tmp: Path) -> dict[str, str]:
    """Environment for a `python -m workers` child: the topology data and its stores in tmp."""
    topology = tmp / "orders.yaml"
    topology.write_text(yaml.safe_dump(data))
    return worker_env(amqp_url, topology, tmp)


async def publish_all(amqp_url: str, events: Iterable[AnyEvent], window: int = 512) -> int:
    """Publish events to `orders` with a confirm window; return how many."""
    connection = await connect(amqp_url, "bench:publish")
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("orders", ensure=False)
        slots = asyncio.Semaphore(window)
        pending: set[asyncio.Future[Any]] = set()

        def settled(fut: asyncio.Future[Any]) -> None:
            slots.release()
            pending.discard(fut)

        count = 0
        for event in events:
            await slots.acquire()
            fut = asyncio.ensure_future(exchange.publish(encode(event), event.event_type.value))
            pending.add(fut)
            fut.add_done_callback(settled)
            count += 1
        await asyncio.gather(*pending)
        return count
