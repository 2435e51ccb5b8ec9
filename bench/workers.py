"""Worker benchmarks, each bus figure beside its baseline measured in the same run.

    python -m bench.workers [--orders 5000] [--backlog 50000] [--only e2e,inventory,...]

- e2e: every downstream with handlers at 0 ms against a raw aio-pika consumer that only acks
  (multiple, every 50), over the same topology and the same backlog;
- inventory: at its 2 ms handling time against the ideal shards x concurrency / 2 ms,
  capped by the raw consumer's ceiling on the same shards;
- warehouse: 200 ms per batch of 100 against the ideal 500 records/s;
- backlog: a backlog of N events per downstream drained by `workers all` with the file's
  handling times; the catch-up rate of each downstream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import fresh_vhost, machine, workers_env
from bench.consume import publish_all, raw_consume
from common.logs import configure_logging
from producer.planned import plan_order
from topology.spec import DEFAULT_TOPOLOGY_FILE, TopologySpec, load_spec
from workers.app import build
from workers.launch import worker_command
from workers.settings import WorkerSettings


def events_for(orders: int) -> list[Any]:
    """created/paid/shipped of `orders` orders, each order's events in seq order."""
    return [e for i in range(orders) for e in plan_order(7, i, 0.0, 0.0).events()]


def variant(keep: list[str], **changes: Any) -> TopologySpec:
    """The shipped topology with only some downstreams, each with some settings changed."""
    return TopologySpec.model_validate(variant_data(keep, **changes))


def variant_data(keep: list[str], **changes: Any) -> Any:
    """The shipped topology file's data with only some downstreams, changed."""
    data = yaml.safe_load(DEFAULT_TOPOLOGY_FILE.read_text())
    data["downstreams"] = {d: {**data["downstreams"][d], **changes} for d in keep}
    return data


async def bus_drain_processes(amqp_url: str, data: Any, per_downstream: int) -> dict[str, float]:
    """`python -m workers all` (a process per downstream), timed until every inbox is full."""
    with tempfile.TemporaryDirectory() as tmp:
        env = workers_env(amqp_url, data, Path(tmp))
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(*worker_command("all"), env=env)
        rates: dict[str, float] = {}
        while len(rates) < len(data["downstreams"]):
            for d in data["downstreams"]:
                if d not in rates and _inbox_count(Path(tmp) / f"{d}.db") >= per_downstream:
                    rates[d] = per_downstream / (time.perf_counter() - started)
            await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
        return rates


def _inbox_count(path: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
            return int(db.execute("SELECT count(*) FROM inbox").fetchone()[0])
    except sqlite3.Error:
        return 0


async def bus_drain(amqp_url: str, spec: TopologySpec, per_downstream: int) -> dict[str, float]:
    """Run every downstream of spec in this process until each applied per_downstream events."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = WorkerSettings(amqp_url=amqp_url, workers_store_dir=Path(tmp))
        workers = await build(spec, ["all"], settings)
        stop = asyncio.Event()
        started = time.perf_counter()
        task = asyncio.create_task(workers.run(stop))
        rates: dict[str, float] = {}
        while len(rates) < len(workers.workers):
            for w in workers.workers:
                applied = (
                    workers.registry.get_sample_value(
                        "bus_worker_applied_total", {"downstream": w.name}
                    )
                    or 0
                )
                if w.name not in rates and applied >= per_downstream:
                    rates[w.name] = per_downstream / (time.perf_counter() - started)
            await asyncio.sleep(0.02)
        stop.set()
        await task
        return rates


async def measure(spec: TopologySpec, orders: int, runner: str) -> dict[str, float]:
    """Publish `orders` orders into a fresh vhost, then drain it with the bus or raw."""
    events = events_for(orders)
    with fresh_vhost(spec) as (url, _):
        await publish_all(url, events)
        if runner == "raw":
            rate = await raw_consume(url, spec, list(spec.downstreams), len(events))
            return {d: rate for d in spec.downstreams}
        return await bus_drain(url, spec, len(events))


async def end_to_end(names: list[str], orders: int) -> dict[str, Any]:
    """Every downstream at 0 ms: the raw consumer, the bus in one process, a process each."""
    zero = variant(names, handler_time="0ms")
    raw = min((await measure(zero, orders, "raw")).values())
    one = min((await measure(zero, orders, "bus")).values())
    events = events_for(orders)
    with fresh_vhost(zero) as (url, _):
        await publish_all(url, events)
        data = variant_data(names, handler_time="0ms")
        each = min((await bus_drain_processes(url, data, len(events))).values())
    return {
        "events": orders * 3,
        "downstreams": len(names),
        "raw_events_per_s": round(raw),
        "bus_one_process_events_per_s": round(one),
        "bus_process_per_downstream_events_per_s": round(each),
        "ratio_one_process": round(one / raw, 3),
        "ratio_process_per_downstream": round(each / raw, 3),
    }


async def inventory_2ms(orders: int) -> dict[str, Any]:
    """inventory at its handling time against the ideal, capped by the raw ceiling."""
    inv = variant(["inventory"])
    ds = inv.downstreams["inventory"]
    ceiling = (await measure(inv, orders, "raw"))["inventory"]
    applied = (await measure(inv, orders, "bus"))["inventory"]
    ideal = min(ds.shards * ds.concurrency / (ds.handler_time / 1000), ceiling)
    return {
        "events": orders * 3,
        "handler_ms": ds.handler_time,
        "shards": ds.shards,
        "concurrency": ds.concurrency,
        "raw_ceiling_events_per_s": round(ceiling),
        "ideal_events_per_s": round(ideal),
        "bus_events_per_s": round(applied),
        "ratio": round(applied / ideal, 3),
    }


async def warehouse_batches(orders: int) -> dict[str, Any]:
    """The warehouse's batches against the ideal records/s."""
    wh = variant(["warehouse"])
    ds = wh.downstreams["warehouse"]
    assert ds.batch is not None
    loaded = (await measure(wh, orders, "bus"))["warehouse"]
    ideal = ds.batch.size / (ds.handler_time / 1000)
    return {
        "events": orders * 3,
        "batch_size": ds.batch.size,
        "batch_ms": ds.handler_time,
        "ideal_records_per_s": round(ideal),
        "bus_records_per_s": round(loaded),
        "ratio": round(loaded / ideal, 3),
    }


async def backlog_drain(spec: TopologySpec, backlog: int) -> dict[str, Any]:
    """A backlog per downstream drained by `workers all` with the file's handling times."""
    backlog_orders = backlog // 3
    events = events_for(backlog_orders)
    with fresh_vhost(spec) as (url, _):
        await publish_all(url, events)
        rates = await bus_drain_processes(url, variant_data(list(spec.downstreams)), len(events))
    return {
        "events_per_downstream": backlog_orders * 3,
        "catch_up_events_per_s": {d: round(r) for d, r in rates.items()},
        "note": "python -m workers all (a process per downstream), the file's handling times",
    }


async def main(orders: int, backlog: int, only: set[str]) -> dict[str, Any]:
    """Run the chosen benchmarks and return the report."""
    spec = load_spec(DEFAULT_TOPOLOGY_FILE)
    report: dict[str, Any] = {"machine": machine()}
    if "e2e" in only:
        report["e2e_0ms"] = await end_to_end(list(spec.downstreams), orders)
    if "inventory" in only:
        report["inventory_2ms"] = await inventory_2ms(orders)
    if "warehouse" in only:
        report["warehouse_batches"] = await warehouse_batches(orders)
    if "backlog" in only:
        report["backlog_drain"] = await backlog_drain(spec, backlog)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--only", default="e2e,inventory,warehouse,backlog")
    args = parser.parse_args()
    configure_logging("WARNING")
    result = asyncio.run(main(args.orders, args.backlog, set(args.only.split(","))))
    print(json.dumps(result, indent=2))
