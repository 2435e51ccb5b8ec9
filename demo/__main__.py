"""`python -m demo`: the whole bus on this machine, then proof that its promises held.

Applies the topology to a fresh vhost, starts the five downstreams, simulates orders with
flaky and poison SKUs through the outbox, shows progress and lag until everything is applied
or dead-lettered, and checks the invariants from the stores and the DLQs. Exit status 1 if
any invariant fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from broker.connect import connect
from broker.management import ManagementClient, ManagementError
from broker.queues import queue_depth
from common.settings import (
    Settings,
    SettingsError,
    load_settings,
    with_vhost,
    without_credentials,
)
from demo.report import Check, check_store, read_truth
from operations.dlq import DeadLetters
from simulation.launch import simulated_worker_command
from topology import names
from topology.apply import apply_plan, plan_against
from topology.compile import compile_topology
from topology.spec import DEFAULT_TOPOLOGY_FILE, TopologySpec
from workers.process.launch import worker_env

console = Console(stderr=True)


def demo_topology(path: Path) -> TopologySpec:
    """The shipped topology with short retry delays, so flaky orders heal within seconds."""
    data = yaml.safe_load(DEFAULT_TOPOLOGY_FILE.read_text())
    for ds in data["downstreams"].values():
        ds["retry"]["tiers"] = dict(zip(ds["retry"]["tiers"], ("200ms", "1s", "2s"), strict=True))
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return TopologySpec.model_validate(data)


def _refused(vhost: str, work: Path) -> str | None:
    """Why the demo will not run there: it deletes its vhost and its work folder first."""
    if vhost in ("/", ""):
        return "the demo deletes and recreates its vhost; it will not touch the default vhost '/'"
    var = Path("var").resolve()
    if not work.is_relative_to(var) or work == var:
        return f"the demo deletes its --work folder first; it must lie inside {var}, not {work}"
    return None


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m demo",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--orders", type=int, default=2000, help="orders to simulate (default: %(default)s)"
    )
    parser.add_argument(
        "--flaky-rate",
        type=float,
        default=0.05,
        help="share of orders that fail, then heal (default: %(default)s)",
    )
    parser.add_argument(
        "--poison-rate",
        type=float,
        default=0.01,
        help="share of orders that never apply (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="makes the orders reproducible (default: %(default)s)"
    )
    parser.add_argument(
        "--vhost", default="demo", help="vhost to delete and recreate (never the default '/')"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to settle (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("var/demo"),
        help="stores and files, deleted first; must be inside var/ (default: %(default)s)",
    )
    return parser


def main() -> int:
    """Run the demo; return the exit status."""
    args = build_parser().parse_args()
    try:
        settings = load_settings()
    except SettingsError as exc:
        console.print(f"error: {exc}", markup=False)
        return 1
    work = args.work.resolve()
    if refused := _refused(args.vhost, work):
        console.print(f"[bold red]refused:[/] {refused}", highlight=False, soft_wrap=True)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    (work / "stores").mkdir(parents=True)
    spec = demo_topology(work / "orders.yaml")
    amqp_url = with_vhost(settings.amqp_url, args.vhost)
    try:
        with ManagementClient(
            settings.rabbitmq_management_url, ca_file=settings.management_ca_file
        ) as client:
            client.delete_vhost(args.vhost)  # a fresh start: no backlog or dead letters of old runs
            apply_plan(client, plan_against(client, spec, compile_topology(spec), args.vhost))
    except ManagementError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 1
    console.print(f"topology applied to vhost {args.vhost!r}: {len(spec.downstreams)} downstreams")
    env = worker_env(
        amqp_url,
        work / "orders.yaml",
        work / "stores",
        extra={"PRODUCER_DSN": f"sqlite+aiosqlite:///{work / 'orders.db'}"},
    )
    logs = work / "logs"  # the children's log lines: not through the progress display
    logs.mkdir()
    with (logs / "workers.log").open("wb") as out:
        workers = subprocess.Popen(simulated_worker_command("all"), env=env, stderr=out)
    try:
        outcome = asyncio.run(run(args, spec, amqp_url, env, work))
    finally:
        workers.send_signal(signal.SIGTERM)
        workers.wait(60)
    if outcome is None:
        return 1
    summary, checks = outcome
    return report(args, summary, checks, settings)


async def run(
    args: argparse.Namespace, spec: TopologySpec, amqp_url: str, env: dict[str, str], work: Path
) -> tuple[dict[str, Any], list[Check]] | None:
    """Simulate orders, watch them settle, and gather the invariants (workers already run)."""
    with (work / "logs" / "producer.log").open("wb") as producer_log:
        simulate = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simulation",
            "orders",
            "--orders",
            str(args.orders),
            "--seed",
            str(args.seed),
            "--flaky-rate",
            str(args.flaky_rate),
            "--poison-rate",
            str(args.poison_rate),
            "--json",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=producer_log,
        )
        summary_out, _ = await simulate.communicate()
    if simulate.returncode:
        console.print(f"[bold red]the simulation failed[/]; see {work / 'logs' / 'producer.log'}")
        return None
    summary = json.loads(summary_out.decode().strip().splitlines()[-1])
    truth = read_truth(work / "orders.db")
    settled = await watch(amqp_url, spec, work / "stores", 3 * truth.orders, args.timeout)
    dead = await dead_letters(amqp_url, spec)
    checks = [
        c
        for d in spec.downstreams
        for c in check_store(d, work / "stores" / f"{d}.db", truth, dead[d])
    ]
    checks.append(Check("bus", "settled before the timeout", True, settled))
    checks.append(Check("producer", "outbox backlog", 0, summary["outbox_backlog"]))
    return summary, checks


async def watch(
    amqp_url: str, spec: TopologySpec, stores: Path, expected: int, within: float
) -> bool:
    """Show each downstream's progress (applied + dead-lettered) and lag until all settle."""
    progress = Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lag {task.fields[lag]:>6}"),
        TextColumn("dlq {task.fields[dlq]:>4}"),
        TimeElapsedColumn(),
        console=console,
    )
    connection = await connect(amqp_url, "demo")
    deadline = time.monotonic() + within
    async with connection:
        channel = await connection.channel()
        with progress:
            tasks = {
                d: progress.add_task(d, total=expected, lag=0, dlq=0) for d in spec.downstreams
            }
            while time.monotonic() < deadline:
                done = 0
                for d, ds in spec.downstreams.items():
                    applied = _count(stores / f"{d}.db")
                    dlq = await queue_depth(channel, names.dlq(d))
                    lag = sum(
                        [await queue_depth(channel, names.shard(d, i)) for i in range(ds.shards)]
                    )
                    waiting = sum(
                        [
                            await queue_depth(channel, names.retry_queue(d, t))
                            for t in ds.retry.tiers
                        ]
                    )
                    progress.update(tasks[d], completed=applied + dlq, lag=lag + waiting, dlq=dlq)
                    done += applied + dlq == expected and lag + waiting == 0
                if done == len(spec.downstreams):
                    return True
                await asyncio.sleep(0.5)
    return False


async def dead_letters(amqp_url: str, spec: TopologySpec) -> dict[str, list[tuple[str, str, str]]]:
    """(order_id, reason, event_id) of every dead letter, per downstream, none removed."""
    out = {}
    for d in spec.downstreams:
        async with DeadLetters(amqp_url, d) as dead:
            out[d] = [(m.order_id, m.reason, m.event_id) for m in dead.messages]
    return out


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM inbox").fetchone()[0])
    except sqlite3.Error:
        return 0


def report(
    args: argparse.Namespace, summary: dict[str, Any], checks: list[Check], settings: Settings
) -> int:
    """Print the report; 0 when every invariant holds."""
    failed = [c for c in checks if not c.ok]
    if args.json:
        print(
            json.dumps(
                {
                    "simulation": summary,
                    "checks": [
                        {
                            "downstream": c.downstream,
                            "check": c.name,
                            "expected": c.expected,
                            "actual": c.actual,
                            "ok": c.ok,
                        }
                        for c in checks
                    ],
                    "ok": not failed,
                }
            )
        )
    table = Table(
        title=f"invariants after {summary['orders']} orders "
        f"({summary['flaky_orders']} flaky, {summary['poison_orders']} poisoned)"
    )
    for column in ("downstream", "invariant", "expected", "actual", ""):
        table.add_column(column)
    for c in checks:
        table.add_row(
            c.downstream,
            c.name,
            str(c.expected),
            str(c.actual),
            "[green]ok[/]" if c.ok else "[bold red]FAILED[/]",
        )
    console.print(table)
    ui = without_credentials(settings.rabbitmq_management_url)
    console.print(f"management UI: {ui} (vhost {args.vhost!r}); stores in {args.work}/stores")
    console.print(f"logs: {args.work}/logs/workers.log, {args.work}/logs/producer.log")
    if failed:
        console.print(f"[bold red]{len(failed)} invariant(s) failed[/]")
        return 1
    console.print("[bold green]every invariant holds[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
