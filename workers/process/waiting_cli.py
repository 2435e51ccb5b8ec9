"""`python -m workers waiting <downstream>`: the events a downstream's store holds for their
predecessor (table `waiting`), by order and seq, with how long each has waited and until when."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from common import cli
from common.loop import run
from topology.service import ServiceContext
from topology.spec import DownstreamSpec
from workers.api import handler_for
from workers.process.settings import WorkerSettings
from workers.store.database import DownstreamStore

Context = ServiceContext[WorkerSettings]


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("downstream", help="a downstream of the file")
    parser.add_argument("--limit", type=int, default=100, help="rows shown at most (default 100)")


def _waiting(args: argparse.Namespace, ctx: Context) -> int:
    ds = ctx.spec.downstream(args.downstream)
    return run(_show(args, ctx, ds))


async def _show(args: argparse.Namespace, ctx: Context, ds: DownstreamSpec) -> int:
    handler = handler_for(args.downstream, ds)
    settings = ctx.settings
    store = await DownstreamStore.open(
        args.downstream,
        handler.metadata,
        settings.workers_dsn,
        settings.workers_store_dir,
        handler.revisions,
    )
    try:
        rows = await store.waiting_rows()
    finally:
        await store.close()
    now = datetime.now(UTC).timestamp() * 1000
    shown = [
        {
            "event_id": r.event_id,
            "order_id": r.order_id,
            "seq": r.seq,
            "shard": r.shard,
            "waited_s": round((now - r.since_ms) / 1000, 1),
            "until": datetime.fromtimestamp(r.expires_at_ms / 1000, UTC).isoformat(),
        }
        for r in rows[: args.limit]
    ]
    if getattr(args, "json", False):
        print(json.dumps({"downstream": args.downstream, "waiting": len(rows), "rows": shown}))
        return cli.EXIT_OK
    print(f"{args.downstream}: {len(rows)} event(s) waiting for their predecessor in the store")
    for s in shown:
        print(
            f"  {s['order_id']} seq {s['seq']}  {s['event_id']}  {s['shard']}  "
            f"waited {s['waited_s']}s, until {s['until']} (then predecessor-missing)"
        )
    return cli.EXIT_OK


WAITING = cli.Command[Context](
    "waiting",
    "list the events a downstream's store holds for their predecessor (table waiting)",
    _waiting,
    _arguments,
    json=True,
)
