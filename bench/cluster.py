"""The bus on the three-node cluster beside the single node, in one run: relay and end-to-end
throughput, and the CPU each spends per event (the clients' and the brokers').

    python -m bench.cluster [--events 15000] [--orders 2000] [--rounds 2]

The single node is the broker of AMQP_URL / RABBITMQ_MANAGEMENT_URL; the cluster is
BUS_CLUSTER_AMQP_URL / BUS_CLUSTER_MANAGEMENT_URL (default: the nodes of scripts/cluster-up,
which must run). Rounds alternate single node and cluster, so the machine's drift hits both
alike. Broker CPU is read from the nodes' OS processes (`rabbitmqctl eval`), so it needs
rabbitmqctl's access to the nodes; without it that column is left out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bench import drain, relay
from bench.common import Target, fresh_vhost, machine, settings_target
from bench.measure import Steady, tree_cpu
from bench.workers import events_for, variant_data
from broker.management import ManagementClient
from common.logs import configure_logging
from producer.db import make_engine
from topology.spec import DEFAULT_TOPOLOGY_FILE, load_spec

T = TypeVar("T")
CLUSTER = Target(
    "cluster",
    os.environ.get(
        "BUS_CLUSTER_AMQP_URL",
        ",".join(f"amqp://guest:guest@localhost:568{n}/" for n in (1, 2, 3)),
    ),
    os.environ.get(
        "BUS_CLUSTER_MANAGEMENT_URL",
        ",".join(f"http://guest:guest@localhost:1568{n}" for n in (1, 2, 3)),
    ),
)


def broker_pids(target: Target) -> list[int]:
    """The OS processes of the target's running nodes ([] when rabbitmqctl cannot reach one)."""
    with ManagementClient(target.management_url) as client:
        nodes = [n["name"] for n in client.nodes() if n.get("running")]
    pids = []
    for node in nodes:
        done = subprocess.run(
            ["rabbitmqctl", "-q", "-n", node, "eval", "os:getpid()."],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return []
        pids.append(int(done.stdout.strip().strip('"')))
    return pids


def with_broker_cpu(pids: list[int], events: int, run: Callable[[], T]) -> tuple[T, float | None]:
    """Run, and the brokers' CPU µs per event over it (None when their processes are unknown)."""
    before = sum(tree_cpu(p) for p in pids)
    result = run()
    if not pids:
        return result, None
    return result, round((sum(tree_cpu(p) for p in pids) - before) / events * 1e6, 1)


def relay_round(target: Target, events: int, window: int, pids: list[int]) -> dict[str, Any]:
    """The relay draining a prefilled SQLite outbox into a fresh vhost on the target."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'outbox.db'}")

        async def run() -> tuple[float, float]:
            rows = await relay.prefill(engine, events)
            with fresh_vhost(target=target) as (url, spec):
                return await relay.relay_run(url, spec.exchange.name, engine, len(rows), window)

        (rate, cpu), broker = with_broker_cpu(pids, events, lambda: asyncio.run(run()))
        asyncio.run(engine.dispose())
    return {"events_per_s": round(rate), "cpu_us_per_event": round(cpu, 1), "broker": broker}


def e2e_round(target: Target, orders: int, pids: list[int]) -> dict[str, Any]:
    """`workers all` (a process per downstream, 0 ms handlers) draining a backlog on the target."""
    every = list(load_spec(DEFAULT_TOPOLOGY_FILE).downstreams)
    data, events = variant_data(every, handler_time="0ms"), events_for(orders)
    with drain.backlog(data, events, target) as b:
        figure: Steady
        figure, broker = with_broker_cpu(pids, b.total, lambda: drain.bus(b, "all"))
    row: dict[str, Any] = figure.as_dict()
    row["broker"] = broker
    return row


def _median(rounds: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return round(statistics.median(values), 1) if values else None


def _summary(single: list[dict[str, Any]], cluster: list[dict[str, Any]]) -> dict[str, Any]:
    one, three = _median(single, "events_per_s"), _median(cluster, "events_per_s")
    assert one and three
    broker_one, broker_three = _median(single, "broker"), _median(cluster, "broker")
    return {
        "single_events_per_s": one,
        "cluster_events_per_s": three,
        "cluster_over_single": round(three / one, 3),
        "client_cpu_us_per_event": {
            "single": _median(single, "cpu_us_per_event"),
            "cluster": _median(cluster, "cpu_us_per_event"),
        },
        "broker_cpu_us_per_event": {"single": broker_one, "cluster": broker_three},
        "broker_cpu_cluster_over_single": (
            round(broker_three / broker_one, 2) if broker_one and broker_three else None
        ),
        "rounds": {"single": single, "cluster": cluster},
    }


def main(events: int, orders: int, rounds: int, window: int = 256) -> dict[str, Any]:
    """Alternate single node and cluster for each benchmark; medians and ratios."""
    single_target = settings_target()
    pids = {t.name: broker_pids(t) for t in (single_target, CLUSTER)}
    relays: dict[str, list[dict[str, Any]]] = {single_target.name: [], CLUSTER.name: []}
    e2e: dict[str, list[dict[str, Any]]] = {single_target.name: [], CLUSTER.name: []}
    for _ in range(rounds):
        for target in (single_target, CLUSTER):
            relays[target.name].append(relay_round(target, events, window, pids[target.name]))
            print(f"relay on {target.name}: {relays[target.name][-1]}", file=sys.stderr)
        for target in (single_target, CLUSTER):
            e2e[target.name].append(e2e_round(target, orders, pids[target.name]))
            print(f"end to end on {target.name}: {e2e[target.name][-1]}", file=sys.stderr)
    with ManagementClient(CLUSTER.management_url) as client:
        nodes = len(client.nodes())
    return {
        "benchmark": "cluster_vs_single_node",
        "cluster_nodes": nodes,
        "replication": "the shipped file: group_size 3 (one member on the single node)",
        "relay": {"events": events, "window": window, **_summary(*relays.values())},
        "end_to_end": {
            "events_per_downstream": orders * 3,
            "layout": "workers all, a process per downstream, handlers at 0 ms",
            **_summary(*e2e.values()),
        },
        "machine": machine(),
        "note": "all nodes share this machine's cores: on three machines each node pays only "
        "its own share of the replication work",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--events", type=int, default=15_000, help="outbox rows the relay sends")
    parser.add_argument("--orders", type=int, default=2000, help="orders in the e2e backlog")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    configure_logging("WARNING")
    print(json.dumps(main(args.events, args.orders, args.rounds), indent=2))
