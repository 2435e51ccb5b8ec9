"""Worker benchmarks, each bus figure beside its baseline measured in the same run.

    python -m bench.workers [--orders 5000] [--backlog 50000] [--only e2e,inventory,...]

Every consumer runs as its own process and is measured over the steady middle of its drain
(`bench.measure`): events/s per downstream and microseconds of CPU per event.

- e2e: every downstream at 0 ms. The bus (`python -m workers all`, a process per downstream;
  also in one process, and on the standard asyncio loop) beside a raw aio-pika consumer that
  only acks, and FastStream subscribers without and with an inbox commit per message;
- inventory: at its 2 ms handling time against the ideal shards x concurrency / 2 ms,
  capped by the raw consumer's ceiling on the same shards;
- warehouse: 200 ms per batch of 100 against the ideal 500 records/s;
- shuffled: inventory at 0 ms with every order's events in a random order beside the same
  drain in seq order, two interleaved pairs;
- poison: inventory at 0 ms draining with 1% of orders poisoned beside the same drain with
  none (healthy events/s), two interleaved pairs;
- scale: inventory at 2 ms with 1, 2 and 3 processes on one shared PostgreSQL store
  (BENCH_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres);
- backlog: a backlog per downstream drained by `workers all` with the file's handling times.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import random
import statistics
from typing import Any

import yaml

from bench import drain
from bench.common import machine
from bench.measure import Steady
from common.logs import configure_logging
from events import AnyEvent
from simulation.planned import plan_order
from topology.spec import DEFAULT_TOPOLOGY_FILE, TopologySpec, load_spec

POISON_RATE = 0.01
# The peers of process_per_downstream, by the kind drain.peers_per_downstream runs.
KINDS = {"raw": "aio-pika", "node": "node"}


def events_for(orders: int, poison_rate: float = 0.0) -> list[AnyEvent]:
    """created/paid/shipped of `orders` orders, each order's events in seq order."""
    return [e for i in range(orders) for e in plan_order(7, i, 0.0, poison_rate).events()]


def variant(keep: list[str], **changes: Any) -> TopologySpec:
    """The shipped topology with only some downstreams, each with some settings changed."""
    return TopologySpec.model_validate(variant_data(keep, **changes))


def variant_data(keep: list[str], **changes: Any) -> Any:
    """The shipped topology file's data with only some downstreams, changed."""
    data = yaml.safe_load(DEFAULT_TOPOLOGY_FILE.read_text())
    data["downstreams"] = {d: {**data["downstreams"][d], **changes} for d in keep}
    return data


def _row(figure: Steady, baseline: Steady | None = None) -> dict[str, Any]:
    row: dict[str, Any] = figure.as_dict()
    if baseline is not None:
        row["ratio"] = round(figure.events_per_s / baseline.events_per_s, 3)
    return row


def end_to_end(names: list[str], orders: int) -> dict[str, Any]:
    """Every downstream at 0 ms: the bus in its layouts beside the raw consumer and FastStream."""
    data, events = variant_data(names, handler_time="0ms"), events_for(orders)

    def drained(run: Any) -> Steady:
        with drain.backlog(data, events) as b:
            result: Steady = run(b)
            return result

    raw = drained(lambda b: drain.peer(b, "consume"))
    report: dict[str, Any] = {"events_per_downstream": len(events), "downstreams": len(names)}
    report["raw_aio_pika"] = _row(raw)
    report["bus_process_per_downstream"] = _row(drained(lambda b: drain.bus(b, "all")), raw)
    report["bus_one_process"] = _row(
        drained(lambda b: drain.bus(b, "all", "--single-process")), raw
    )
    asyncio_loop = {"BUS_EVENT_LOOP": "asyncio"}
    report["bus_asyncio_loop"] = _row(drained(lambda b: drain.bus(b, "all", env=asyncio_loop)), raw)
    if importlib.util.find_spec("faststream") is None:
        report["faststream"] = "not installed: pip install -e '.[bench]'"
        return report
    faststream = drained(lambda b: drain.peer(b, "faststream_peer"))
    inbox = drained(
        lambda b: drain.peer(b, "faststream_peer", "--inbox", str(b.tmp / "faststream-inbox.db"))
    )
    report["faststream"] = _row(faststream, raw)
    report["faststream_inbox"] = _row(inbox, raw)
    bus = report["bus_process_per_downstream"]["events_per_s"]
    report["bus_over_faststream_inbox"] = round(bus / inbox.events_per_s, 2)
    return report


def process_per_downstream(names: list[str], orders: int, rounds: int) -> dict[str, Any]:
    """Every downstream at 0 ms, a process per downstream on both sides, as a user runs them:
    `python -m workers all` beside raw aio-pika consumers (prefetch from the file, multiple
    ack every 50) and the Node amqplib ceiling; the slowest downstream's rate from its first
    event to its last counts. Alternating rounds, medians."""
    data, events = variant_data(names, handler_time="0ms"), events_for(orders)
    rows: dict[str, list[drain.PerDownstream]] = {"raw": [], "bus": [], "node": []}
    kinds = ["raw", "bus", "node"]
    for round_ in range(rounds):
        # Each round starts with a different side (see poison_everywhere).
        for kind in kinds[round_ % 3 :] + kinds[: round_ % 3]:
            with drain.backlog(data, events) as b:
                if kind == "bus":
                    rows["bus"].append(drain.bus_per_downstream(b, "all"))
                elif (peer := drain.peers_per_downstream(b, KINDS[kind])) is not None:
                    rows[kind].append(peer)
    if not rows["raw"]:
        raise RuntimeError("the raw aio-pika consumers did not run")

    def median(kind: str) -> dict[str, Any] | None:
        if not rows[kind]:
            return None
        ordered = sorted(rows[kind], key=lambda r: r.slowest)
        return ordered[len(ordered) // 2].as_dict()

    report: dict[str, Any] = {
        "events_per_downstream": len(events),
        "rounds": rounds,
        "raw_aio_pika_process_per_downstream": median("raw"),
        "bus_workers_all": median("bus"),
        "node_amqplib_process_per_downstream": median("node")
        or "node and npm are not installed: no ceiling row",
    }
    bus = statistics.median(r.slowest for r in rows["bus"])
    report["ratio_to_raw"] = round(bus / statistics.median(r.slowest for r in rows["raw"]), 3)
    if rows["node"]:
        report["fraction_of_node"] = round(
            bus / statistics.median(r.slowest for r in rows["node"]), 3
        )
    return report


def poison_everywhere(
    names: list[str], orders: int, rates: tuple[float, ...], pairs: int
) -> dict[str, Any]:
    """`python -m workers all` (five downstreams, 0 ms) with a share of orders poisoned beside
    the same backlog with none, in interleaved pairs: the slowest downstream's healthy
    events/s, from its first applied event to its last."""
    data = variant_data(names, handler_time="0ms")
    downstreams = len(names)
    clean = events_for(orders)
    out: dict[str, Any] = {"orders": orders, "processes": downstreams}

    def drained(events: list[AnyEvent], expected: int) -> drain.PerDownstream:
        with drain.backlog(data, events) as b:
            return drain.bus_per_downstream(b, "all", expected=expected)

    for rate in rates:
        poisoned = events_for(orders, rate)
        bad = {e.order_id for e in poisoned if e.seq == 1 and "POISON-" in e.model_dump_json()}
        healthy = sum(1 for e in poisoned if e.order_id not in bad)
        ratios, rounds = [], []
        for pair in range(pairs):
            # Which side goes first alternates: the broker still tidies the vhost just
            # deleted while the next drain starts.
            if pair % 2 == 0:
                without = drained(clean, len(clean) * downstreams)
                with_poison = drained(poisoned, healthy * downstreams)
            else:
                with_poison = drained(poisoned, healthy * downstreams)
                without = drained(clean, len(clean) * downstreams)
            ratios.append(round(with_poison.slowest / without.slowest, 3))
            rounds.append({"clean": without.as_dict(), "poisoned": with_poison.as_dict()})
        out[f"{rate:.0%}"] = {
            "poisoned_orders": len(bad),
            "rounds": rounds,
            "ratios": ratios,
            "ratio_median": statistics.median(ratios),
        }
    return out


def inventory_2ms(orders: int) -> dict[str, Any]:
    """inventory at its handling time against the ideal, capped by the raw ceiling."""
    data = variant_data(["inventory"])
    ds = TopologySpec.model_validate(data).downstreams["inventory"]
    events = events_for(orders)
    with drain.backlog(data, events) as b:
        ceiling = drain.peer(b, "consume")
    with drain.backlog(data, events) as b:
        bus = drain.bus(b, "inventory")
    ideal = min(ds.shards * ds.concurrency / (ds.handler_time / 1000), ceiling.events_per_s)
    return {
        "events": len(events),
        "handler_ms": ds.handler_time,
        "shards": ds.shards,
        "concurrency": ds.concurrency,
        "raw_ceiling": _row(ceiling),
        "ideal_events_per_s": round(ideal),
        "bus": bus.as_dict(),
        "ratio": round(bus.events_per_s / ideal, 3),
    }


def warehouse_batches(orders: int) -> dict[str, Any]:
    """The warehouse's batches against the ideal records/s."""
    data = variant_data(["warehouse"])
    ds = TopologySpec.model_validate(data).downstreams["warehouse"]
    assert ds.batch is not None
    with drain.backlog(data, events_for(orders)) as b:
        bus = drain.bus(b, "warehouse")
    ideal = ds.batch.size / (ds.handler_time / 1000)
    return {
        "events": orders * 3,
        "batch_size": ds.batch.size,
        "batch_ms": ds.handler_time,
        "ideal_records_per_s": round(ideal),
        "bus": bus.as_dict(),
        "ratio": round(bus.events_per_s / ideal, 3),
    }


def poison_cost(orders: int, pairs: int = 2) -> dict[str, Any]:
    """Healthy events/s with 1% of orders poisoned beside the same drain with none."""
    data = variant_data(["inventory"], handler_time="0ms")
    clean, poisoned = events_for(orders), events_for(orders, POISON_RATE)
    bad = {e.order_id for e in poisoned if e.seq == 1 and "POISON-" in e.model_dump_json()}
    healthy = sum(1 for e in poisoned if e.order_id not in bad)
    rounds: list[dict[str, Any]] = []
    ratios: list[float] = []
    for _ in range(pairs):
        with drain.backlog(data, clean) as b:
            without = drain.bus(b, "inventory")
        with drain.backlog(data, poisoned) as b:
            with_poison = drain.bus(b, "inventory", expected=healthy)
        ratios.append(round(with_poison.events_per_s / without.events_per_s, 3))
        rounds.append(
            {"clean": without.as_dict(), "poisoned": with_poison.as_dict(), "ratio": ratios[-1]}
        )
    return {
        "orders": orders,
        "poisoned_orders": len(bad),
        "rounds": rounds,
        "ratio_median": statistics.median(ratios),
    }


def shuffled_cost(orders: int, pairs: int = 2) -> dict[str, Any]:
    """Events/s of inventory at 0 ms with every order's events in a random order beside the
    same drain in seq order (the early ones wait for their predecessor)."""
    data = variant_data(["inventory"], handler_time="0ms")
    clean = events_for(orders)
    rng = random.Random(11)
    shuffled: list[AnyEvent] = []
    for at in range(0, len(clean), 3):
        shuffled += rng.sample(clean[at : at + 3], 3)
    rounds: list[dict[str, Any]] = []
    ratios: list[float] = []
    for _ in range(pairs):
        with drain.backlog(data, clean) as b:
            in_order = drain.bus(b, "inventory")
        with drain.backlog(data, shuffled) as b:
            mixed = drain.bus(b, "inventory")
        ratios.append(round(mixed.events_per_s / in_order.events_per_s, 3))
        rounds.append(
            {"in_order": in_order.as_dict(), "shuffled": mixed.as_dict(), "ratio": ratios[-1]}
        )
    return {"orders": orders, "rounds": rounds, "ratio_median": statistics.median(ratios)}


def scale_out(orders: int, counts: tuple[int, ...] = (1, 2, 3)) -> dict[str, Any]:
    """inventory at 2 ms with 1, 2 and 3 processes sharing one PostgreSQL store."""
    data, events = variant_data(["inventory"]), events_for(orders)
    rows: dict[str, Any] = {}
    for n in counts:
        with drain.postgres_database() as dsn, drain.backlog(data, events) as b:
            result, shares = drain.processes(b, "inventory", n, dsn)
        rows[str(n)] = {**result.as_dict(), "core_share_per_process": [round(s, 2) for s in shares]}
    one = rows["1"]["events_per_s"]
    for n in counts[1:]:
        rows[str(n)]["ratio_to_one"] = round(rows[str(n)]["events_per_s"] / one, 2)
    return {
        "events": len(events),
        "processes": rows,
        "note": "processes of python -m workers inventory (2 ms per event) on one PostgreSQL "
        "store, shards spread by leases; core share = CPU seconds per second of the window",
    }


def backlog_drain(spec: TopologySpec, backlog: int) -> dict[str, Any]:
    """A backlog per downstream drained by `workers all` with the file's handling times."""
    data = variant_data(list(spec.downstreams))
    with drain.backlog(data, events_for(backlog // 3)) as b:
        bus = drain.bus(b, "all")
        per_downstream = drain.catch_up(b)
    return {
        "events_per_downstream": backlog // 3 * 3,
        "bus": bus.as_dict(),
        "catch_up_events_per_s": per_downstream,
        "note": "python -m workers all (a process per downstream), the file's handling times",
    }


async def main(orders: int, backlog: int, only: set[str]) -> dict[str, Any]:
    """Run the chosen benchmarks and return the report (each drain in a thread)."""
    spec = load_spec()
    report: dict[str, Any] = {"machine": machine()}
    names = list(spec.downstreams)
    steps = {
        "e2e": ("e2e_0ms", lambda: end_to_end(names, orders)),
        "inventory": ("inventory_2ms", lambda: inventory_2ms(orders)),
        "warehouse": ("warehouse_batches", lambda: warehouse_batches(orders)),
        "poison": ("poison_cost", lambda: poison_cost(3 * orders)),
        "shuffled": ("shuffled_cost", lambda: shuffled_cost(3 * orders)),
        "scale": ("scale_out", lambda: scale_out(orders)),
        "backlog": ("backlog_drain", lambda: backlog_drain(spec, backlog)),
        "per_process": (
            "process_per_downstream",
            lambda: process_per_downstream(names, orders, 1 if orders < 5000 else 2),
        ),
        "poison_all": (
            "poison_everywhere",
            # Three times the orders: at 5,000 a fast day drained in three seconds, too short
            # for the slowest downstream's first-to-last rate to be steady.
            lambda: poison_everywhere(names, 3 * orders, (0.01, 0.05), 3),
        ),
    }
    for key, (name, step) in steps.items():
        if key in only:
            report[name] = await asyncio.to_thread(step)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--backlog", type=int, default=50_000)
    parser.add_argument("--only", default="e2e,inventory,warehouse,poison,shuffled,scale,backlog")
    args = parser.parse_args()
    configure_logging("WARNING")
    result = asyncio.run(main(args.orders, args.backlog, set(args.only.split(","))))
    print(json.dumps(result, indent=2))
