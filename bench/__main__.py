"""`python -m bench`: every benchmark, each bus figure beside its baseline from the same run.

Prints a table (stderr) and the JSON report (stdout). Rates are events/s per downstream over
the steady middle of each drain; CPU is microseconds of the consumer's processes per event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import latency, relay, workers
from common.logs import configure_logging

Row = tuple[str, str, str, str, str, str, str]


async def run(quick: bool, with_latency: bool) -> dict[str, Any]:
    """Run the relay, worker and latency-under-load benchmarks."""
    events, orders, backlog = (6000, 2000, 9000) if quick else (30_000, 5000, 50_000)
    report: dict[str, Any] = {"relay": await relay.main(events, 256, 1 if quick else 3)}
    report["workers"] = await workers.main(
        orders,
        backlog,
        {
            "e2e",
            "per_process",
            "inventory",
            "warehouse",
            "poison",
            "poison_all",
            "scale",
            "backlog",
        },
    )
    if with_latency:
        report["latency"] = await latency_under_load(report, 10.0 if quick else 30.0)
    return report


async def latency_under_load(report: dict[str, Any], seconds: float) -> dict[str, Any]:
    """inventory (2 ms) fed at half of the lower of its drain peak and the broker's ingest."""
    spec = workers.variant(["inventory"])
    drain = report["workers"]["inventory_2ms"]["bus"]["events_per_s"]
    ingest = await latency.ingest_peak(spec, seconds)
    rate = min(drain, ingest) / 2
    return {
        "inventory_drain_peak_events_per_s": drain,
        "ingest_peak_events_per_s": round(ingest),
        "rate_events_per_s": round(rate),
        "seconds": seconds,
        "bus": await latency.bus_latency(workers.variant_data(["inventory"]), rate, seconds),
        "raw": await latency.raw_latency(spec, rate, seconds),
        "reshard": await latency.reshard_wait(
            workers.variant_data(["inventory"]), rate, seconds, grow_to=8
        ),
        "note": "inventory (2 ms) as its own process, fed by another process at half its peak: "
        "the lower of the bus's drain rate and what the broker ingests while a raw consumer "
        "drains it; bus = publish to inbox commit, raw = publish to receipt by a consumer "
        "that acks",
    }


def _drain_row(
    name: str, bus: dict[str, Any], base: dict[str, Any], label: str, target: str
) -> Row:
    ratio = round(bus.get("ratio") or bus["events_per_s"] / base["events_per_s"], 3)
    return (
        name,
        f"{label} {base['events_per_s']:,.0f}",
        f"{bus['events_per_s']:,.0f}",
        f"{ratio}",
        f"{bus['cpu_us_per_event']}",
        f"{base.get('cpu_us_per_event', '')}",
        target,
    )


def _slowest(figure: dict[str, Any]) -> dict[str, Any]:
    """A per-downstream figure as a drain figure: the slowest downstream's rate counts."""
    return {
        "events_per_s": figure["slowest_events_per_s"],
        "cpu_us_per_event": figure["cpu_us_per_event"],
    }


def _per_process_rows(per: dict[str, Any]) -> list[Row]:
    """workers all beside raw aio-pika and Node amqplib, a process per downstream each."""
    bus = per["bus_workers_all"]
    n = bus["processes"]
    out = [
        _drain_row(
            f"every downstream 0 ms, {n} processes each side (slowest downstream)",
            {**_slowest(bus), "ratio": per["ratio_to_raw"]},
            _slowest(per["raw_aio_pika_process_per_downstream"]),
            "raw aio-pika",
            "≥ 1.0",
        )
    ]
    node = per["node_amqplib_process_per_downstream"]
    if isinstance(node, dict):
        out.append(
            _drain_row(
                f"  … Node amqplib, the ceiling: {n} processes each side",
                {**_slowest(bus), "ratio": per["fraction_of_node"]},
                _slowest(node),
                "Node amqplib",
                "",
            )
        )
    return out


def _poison_everywhere_rows(everywhere: dict[str, Any]) -> list[Row]:
    """workers all with a share of orders poisoned beside the same backlog with none."""
    out = []
    for rate in ("1%", "5%"):
        if (figure := everywhere.get(rate)) is None:
            continue
        last = figure["rounds"][-1]
        out.append(
            _drain_row(
                f"every downstream 0 ms, {rate} orders poisoned, {everywhere['processes']} "
                "processes each side (slowest downstream)",
                {**_slowest(last["poisoned"]), "ratio": figure["ratio_median"]},
                _slowest(last["clean"]),
                "no poison",
                "≥ 0.9" if rate == "1%" else "≥ 0.8",
            )
        )
    return out


def rows(report: dict[str, Any]) -> list[Row]:
    """The report as bus-beside-baseline rows."""
    r, w = report["relay"], report["workers"]
    e2e, inv, wh = w["e2e_0ms"], w["inventory_2ms"], w["warehouse_batches"]
    raw = e2e["raw_aio_pika"]
    n = e2e["downstreams"]
    out: list[Row] = [
        (
            "relay, events/s, 1 process each side",
            f"raw publisher {r['raw_events_per_s']:,}",
            f"{r['relay_events_per_s']:,}",
            f"{r['ratio']}",
            f"{r['relay_cpu_us_per_event']}",
            f"{r['raw_cpu_us_per_event']}",
            "≥ 0.8",
        ),
        _drain_row(
            f"end to end 0 ms: bus {n} processes (one per downstream), raw 1",
            e2e["bus_process_per_downstream"],
            raw,
            "raw aio-pika",
            "≥ 1.0",
        ),
        _drain_row("  … bus 1 process, raw 1", e2e["bus_one_process"], raw, "raw aio-pika", ""),
        _drain_row(
            f"  … asyncio loop (no uvloop): bus {n} processes, raw 1",
            e2e["bus_asyncio_loop"],
            raw,
            "raw aio-pika",
            "",
        ),
    ]
    if per := w.get("process_per_downstream"):
        out.extend(_per_process_rows(per))
    if isinstance(e2e.get("faststream"), dict):
        fs, inbox = e2e["faststream"], e2e["faststream_inbox"]
        bus = e2e["bus_process_per_downstream"]
        out.append(
            _drain_row(
                f"  … bus {n} processes, FastStream 1",
                {**bus, "ratio": None},
                fs,
                "FastStream",
                "",
            )
        )
        out.append(
            _drain_row(
                f"  … bus {n} processes, FastStream + inbox 1",
                {**bus, "ratio": None},
                inbox,
                "FastStream+inbox",
                "≥ 2.0",
            )
        )
    ideal = {
        "events_per_s": inv["ideal_events_per_s"],
        **{"cpu_us_per_event": inv["raw_ceiling"]["cpu_us_per_event"]},
    }
    out.append(
        _drain_row(
            "inventory 2 ms, 1 process",
            {**inv["bus"], "ratio": inv["ratio"]},
            ideal,
            "ideal",
            "≥ 0.8",
        )
    )
    whi = {"events_per_s": wh["ideal_records_per_s"], "cpu_us_per_event": ""}
    out.append(
        _drain_row(
            "warehouse 200 ms/100, records/s, 1 process",
            {**wh["bus"], "ratio": wh["ratio"]},
            whi,
            "ideal",
            "≥ 0.8",
        )
    )
    if poison := w.get("poison_cost"):
        last = poison["rounds"][-1]
        out.append(
            _drain_row(
                "inventory 0 ms, 1% orders poisoned, 1 process each side",
                {**last["poisoned"], "ratio": poison["ratio_median"]},
                last["clean"],
                "no poison",
                "≥ 0.9",
            )
        )
    if everywhere := w.get("poison_everywhere"):
        out.extend(_poison_everywhere_rows(everywhere))
    if lat := report.get("latency"):
        for q, target in (("p50_ms", "≤ 15"), ("p99_ms", "≤ 60")):
            out.append(
                (
                    f"inventory latency {q} at {lat['rate_events_per_s']} events/s",
                    f"raw {lat['raw'][q]}",
                    f"{lat['bus'][q]}",
                    "",
                    f"{lat['bus']['cpu_us_per_event']}",
                    f"{lat['raw']['cpu_us_per_event']}",
                    target,
                )
            )
    if (lat := report.get("latency")) and (moved := lat["reshard"]["moved"]).get("p50_ms"):
        other = lat["reshard"]["not_moved"]
        out.append(
            (
                f"latency of moved orders' events, growing 4 -> 8 at {lat['rate_events_per_s']}/s",
                f"not moved p50 {other.get('p50_ms')} / p99 {other.get('p99_ms')}",
                f"p50 {moved['p50_ms']} / p99 {moved['p99_ms']}",
                "",
                "",
                "",
                f"{lat['reshard']['moved_orders']} of {lat['reshard']['orders']} orders moved",
            )
        )
    if scale := w.get("scale_out"):
        one = scale["processes"]["1"]
        for n, row in scale["processes"].items():
            if n == "1":
                continue
            out.append(
                (
                    f"inventory 2 ms, {n} processes, shared PostgreSQL store",
                    f"1 process {one['events_per_s']:,.0f}",
                    f"{row['events_per_s']:,.0f}",
                    f"{row['ratio_to_one']}",
                    f"{row['cpu_us_per_event']}",
                    f"{one['cpu_us_per_event']}",
                    "2 ≥ 1.5 where a core is free",
                )
            )
    if catch_up := w.get("backlog_drain"):
        rates = ", ".join(f"{d} {v:,}" for d, v in catch_up["catch_up_events_per_s"].items())
        out.append(
            (
                "backlog catch-up, events/s",
                "",
                rates,
                "",
                f"{catch_up['bus']['cpu_us_per_event']}",
                "",
                "",
            )
        )
    return out


COLUMNS = (
    "benchmark",
    "baseline",
    "bus",
    "ratio",
    "bus µs CPU/event",
    "baseline µs CPU/event",
    "target",
)


def markdown(report: dict[str, Any]) -> str:
    """The report's rows as a Markdown table (the one docs/benchmarks.md shows)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows(report):
        lines.append("| " + " | ".join(cell.strip() for cell in row) + " |")
    return "\n".join(lines)


def table(report: dict[str, Any]) -> Table:
    """The report as a table."""
    t = Table(title="order event bus — each figure beside its baseline from this run")
    for column in COLUMNS:
        t.add_column(column)
    for row in rows(report):
        t.add_row(*row)
    return t


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument(
        "--no-latency", action="store_true", help="skip latency under load (p50/p99)"
    )
    parser.add_argument(
        "--report",
        type=Path,
        help="print a saved JSON report as a Markdown table instead of running",
    )
    args = parser.parse_args()
    if args.report:
        try:
            saved = json.loads(args.report.read_text())
        except (OSError, ValueError) as exc:
            parser.exit(2, f"python -m bench: cannot read {args.report}: {exc}\n")
        print(markdown(saved))
        raise SystemExit(0)
    configure_logging("WARNING")
    result = asyncio.run(run(args.quick, not args.no_latency))
    Console(stderr=True).print(table(result))
    print(json.dumps(result, indent=2))
