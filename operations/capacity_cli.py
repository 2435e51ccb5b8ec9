"""`python -m topology capacity <downstream> --backlog N [--within 1h] [--per-process R]`."""

from __future__ import annotations

import argparse
import json
import re

from rich.table import Table

from common.cli import EXIT_OK, duration
from operations.capacity import Capacity
from operations.status import shard_owners
from topology import names
from topology.commands import Command, Context

_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*$")
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def count(text: str) -> int:
    """A number of events: 5000, 250k, 100M, 1.5G."""
    m = _COUNT.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count: use 5000, 250k, 100M")
    return int(float(m.group(1)) * _SCALE[m.group(2).lower()])


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("downstream")
    parser.add_argument("--backlog", type=count, required=True, help="events to catch up (100M)")
    parser.add_argument(
        "--within", type=duration, default=3600.0, help="deadline, e.g. 45m, 2h (default: 1h)"
    )
    parser.add_argument(
        "--per-process",
        type=float,
        default=None,
        metavar="EVENTS_PER_S",
        help="a process's rate, when nothing drains the downstream now to measure it",
    )


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Measure the downstream now, then do the arithmetic."""
    ctx.spec.downstream(args.downstream)
    pattern = re.compile(names.shard_pattern(args.downstream))
    with ctx.management() as client:
        queues = [q for q in client.list_objects("queues", ctx.vhost) if pattern.match(q["name"])]
        owners = {o for q, o in shard_owners(client, ctx.vhost).items() if pattern.match(q)}
    acked = sum(_rate(q, "ack") for q in queues)
    arriving = sum(_rate(q, "publish") for q in queues)
    per_process = args.per_process or (acked / len(owners) if owners and acked > 0 else 0.0)
    if per_process <= 0:
        return ctx.fail(
            f"nothing drains {args.downstream} now, so there is no rate to measure: "
            "give --per-process (a process's events/s, e.g. from python -m bench)"
        )
    plan = Capacity(args.backlog, args.within, arriving, per_process, len(owners), len(queues) or 1)
    if args.json:
        print(json.dumps({"downstream": args.downstream, **plan.as_dict()}))
    else:
        ctx.out.print(_table(args.downstream, plan, measured=args.per_process is None))
    return EXIT_OK


def _table(downstream: str, c: Capacity, measured: bool) -> Table:
    t = Table(title=f"{downstream}: {c.backlog:,} events within {c.within_s / 3600:g} h")
    t.add_column("")
    t.add_column("")
    source = f"measured over {c.processes_now} process(es)" if measured else "given"
    net, arriving = c.backlog / c.within_s, c.arriving_per_s
    t.add_row("needs", f"{net:,.0f}/s net + {arriving:,.0f}/s arriving = {c.needed_per_s:,.0f}/s")
    t.add_row("one process", f"{c.per_process:,.0f} events/s ({source})")
    now = f"now {c.processes_now} and {c.shards_now}"
    t.add_row("takes", f"{c.processes} process(es) and {c.shards} shard(s) ({now})")
    r = c.replicas()
    t.add_row(
        "on Kubernetes",
        f"replicas {r['wanted']} (KEDA minReplicaCount {r['min']}, maxReplicaCount {r['max']}: "
        "a replica beyond the shards would consume nothing)",
    )
    t.add_row("capped by", "\n".join(c.caps()))
    return t


def _rate(queue: dict[str, object], kind: str) -> float:
    stats = queue.get("message_stats") or {}
    details = stats.get(f"{kind}_details") if isinstance(stats, dict) else None
    return float((details or {}).get("rate") or 0.0) if isinstance(details, dict) else 0.0


CAPACITY = Command(
    "capacity",
    "processes and shards a backlog needs to clear in time (measured live)",
    run,
    _arguments,
    json=True,
)
