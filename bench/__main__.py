"""`python -m bench`: every benchmark, each bus figure beside its raw baseline from the same run.

Prints a table (stderr) and the JSON report (stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import latency, relay, workers
from common.logs import configure_logging


async def run(quick: bool, with_latency: bool) -> dict[str, Any]:
    """Run the relay, worker and latency-under-load benchmarks."""
    events, orders, backlog = (6000, 1000, 6000) if quick else (30_000, 5000, 50_000)
    report: dict[str, Any] = {"relay": await relay.main(events, 256, 1 if quick else 3)}
    report["workers"] = await workers.main(
        orders, backlog, {"e2e", "inventory", "warehouse", "backlog"}
    )
    if not with_latency:
        return report
    seconds = 10.0 if quick else 30.0
    spec = workers.variant(["inventory"])
    drain = report["workers"]["inventory_2ms"]["bus_events_per_s"]
    ingest = await latency.ingest_peak(spec, seconds)
    rate = min(drain, ingest) / 2
    report["latency"] = {
        "inventory_drain_peak_events_per_s": drain,
        "ingest_peak_events_per_s": round(ingest),
        "rate_events_per_s": round(rate),
        "seconds": seconds,
        "bus": await latency.bus_latency(workers.variant_data(["inventory"]), rate, seconds),
        "raw": await latency.raw_latency(spec, rate, seconds),
        "note": "inventory (2 ms) as its own process, fed by another process at half its peak: "
        "the lower of the bus's drain rate and what the broker ingests while a raw consumer "
        "drains it; bus = publish to inbox commit, raw = publish to receipt by a consumer "
        "that acks",
    }
    return report


def table(report: dict[str, Any]) -> Table:
    """The report as bus-beside-baseline rows."""
    t = Table(title="order event bus — each figure beside its baseline from this run")
    for column in ("benchmark", "baseline", "bus", "ratio"):
        t.add_column(column)
    r, w = report["relay"], report["workers"]
    e2e, inv, wh = w["e2e_0ms"], w["inventory_2ms"], w["warehouse_batches"]
    rows = [
        (
            "relay, events/s",
            f"raw publisher {r['raw_events_per_s']}",
            r["relay_events_per_s"],
            r["ratio"],
        ),
        (
            "end to end 0 ms, events/s",
            f"raw consumer {e2e['raw_events_per_s']}",
            e2e["bus_process_per_downstream_events_per_s"],
            e2e["ratio_process_per_downstream"],
        ),
        (
            "inventory 2 ms, events/s",
            f"ideal {inv['ideal_events_per_s']}",
            inv["bus_events_per_s"],
            inv["ratio"],
        ),
        (
            "warehouse 200 ms/100, records/s",
            f"ideal {wh['ideal_records_per_s']}",
            wh["bus_records_per_s"],
            wh["ratio"],
        ),
    ]
    if lat := report.get("latency"):
        for q in ("p50_ms", "p99_ms"):
            rows.append(
                (
                    f"inventory latency {q}, ms, at {lat['rate_events_per_s']} events/s",
                    f"raw {lat['raw'][q]}",
                    lat["bus"][q],
                    "",
                )
            )
    rates = w["backlog_drain"]["catch_up_events_per_s"]
    rows.append(
        ("backlog catch-up, events/s", "", ", ".join(f"{d} {v}" for d, v in rates.items()), "")
    )
    for row in rows:
        t.add_row(*(str(cell) for cell in row))
    return t


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a few minutes)")
    parser.add_argument(
        "--no-latency", action="store_true", help="skip latency under load (p50/p99)"
    )
    args = parser.parse_args()
    configure_logging("WARNING")
    result = asyncio.run(run(args.quick, not args.no_latency))
    Console(stderr=True).print(table(result))
    print(json.dumps(result, indent=2))
