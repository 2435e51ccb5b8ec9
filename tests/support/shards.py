"""Who consumes which shard: the lease holders in a downstream's store, the consumers the
broker sees on each shard queue, and a worker process's own count, scraped."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fixtures import Vhost
from workers.store.database import DownstreamStore


def member_pid(member: str) -> int:
    """The pid in a lease owner's name (worker:<d>:<host>:<pid>:<tag>)."""
    return int(member.split(":")[-2])


def connection_pid(name: str) -> int:
    """The pid in a worker connection's name (worker:<d>:<pid>)."""
    return int(name.rsplit(":", 1)[-1])


async def lease_holders(store: DownstreamStore) -> dict[int, int]:
    """shard index -> pid of the process holding its lease (live or not yet expired)."""
    table = store.metadata.tables["shard_leases"]
    rows = await store.query(table.select())
    return {r.shard: member_pid(r.owner) for r in rows if r.owner}


async def split_over(store: DownstreamStore, pids: set[int], shards: int) -> dict[int, int] | None:
    """The lease holders, once every shard has one and they are exactly these processes."""
    holders = await lease_holders(store)
    return holders if len(holders) == shards and set(holders.values()) == pids else None


def shard_consumers(vhost: Vhost, shards: list[str]) -> dict[str, list[tuple[int, bool]]] | None:
    """Each shard's consumers as (pid, active), the waiting ones of single active consumer
    included (None until the broker's statistics name every consumer's connection)."""
    names_by_connection = {
        c["name"]: (c.get("client_properties") or {}).get("connection_name", "")
        for c in vhost.client.connections(vhost.name)
    }
    out: dict[str, list[tuple[int, bool]]] = {}
    for shard in shards:
        queue = vhost.client.queue(vhost.name, shard) or {}
        out[shard] = []
        for consumer in queue.get("consumer_details") or []:
            # The broker names connections by address; the worker's own name carries its pid.
            channel = consumer.get("channel_details")
            if not isinstance(channel, dict):  # [] until the stats of a new channel arrive
                return None
            name = names_by_connection.get(channel.get("connection_name", ""), "")
            if not name.startswith("worker:"):
                return None
            out[shard].append((connection_pid(name), bool(consumer.get("active"))))
    return out


def sole_consumers(vhost: Vhost, shards: list[str]) -> dict[str, int] | None:
    """The pid of the one (active) consumer of each shard; None until each has exactly one."""
    found = shard_consumers(vhost, shards)
    if found is None or any(len(c) != 1 or not c[0][1] for c in found.values()):
        return None
    return {shard: c[0][0] for shard, c in found.items()}


def scraped(port: int, *names: str) -> dict[str, float]:
    """A process's metric samples of these names (e.g. `bus_worker_redelivered_total`), each
    summed over its labels; 0 for a name it does not report."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in out:
                out[sample.name] += sample.value
    return out


def scraped_one(port: int, name: str) -> float:
    """One metric of a process, summed over its labels."""
    return scraped(port, name)[name]


def shards_of(holders: dict[Any, int], pid: int) -> set[Any]:
    """The shards one process holds."""
    return {shard for shard, holder in holders.items() if holder == pid}
