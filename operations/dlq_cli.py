"""`python -m topology dlq list|show|redrive|purge <downstream>`."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from events.headers import ERROR_STACK, DeadReason
from operations.dlq import DeadLetters, DeadMessage, Filter
from topology.commands import Command, Context


def _arguments(dlq: argparse.ArgumentParser) -> None:
    verbs = dlq.add_subparsers(dest="verb", required=True)
    listing = verbs.add_parser("list", help="a table of the DLQ (nothing is removed)")
    show = verbs.add_parser("show", help="everything about one dead letter")
    redrive = verbs.add_parser(
        "redrive", help="move dead letters back, order by order in seq order"
    )
    purge = verbs.add_parser("purge", help="delete dead letters for good")
    for p in (listing, show, redrive, purge):
        p.add_argument("downstream")
    show.add_argument("event_id")
    for p in (listing, redrive, purge):
        p.add_argument("--order-id", default=None)
    for p in (listing, redrive):
        p.add_argument("--reason", choices=[r.value for r in DeadReason], default=None)
        p.add_argument("--limit", type=int, default=None, help="at most this many messages")
    listing.add_argument("--json", action="store_true")
    redrive.add_argument(
        "--dry-run", action="store_true", help="show what would move; move nothing"
    )
    purge.add_argument("--yes", action="store_true", help="confirm the deletion")


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Carry out one dlq command; return the exit status."""
    ctx.spec.downstream(args.downstream)
    if args.verb == "purge" and not args.yes:
        return ctx.fail("refusing to purge without --yes (dead letters are deleted for good)")
    return asyncio.run(_run(args, ctx.amqp_url, ctx.out))


async def _run(args: argparse.Namespace, amqp_url: str, out: Console) -> int:
    async with DeadLetters(amqp_url, args.downstream) as dead:
        if args.verb == "list":
            rows = [m.row() for m in dead.select(Filter(args.order_id, args.reason), args.limit)]
            _print_rows(out, rows, args.json, len(dead.messages))
            return 0
        if args.verb == "show":
            found = [m for m in dead.messages if m.event_id == args.event_id]
            if not found:
                out.print(f"no dead letter with event_id {args.event_id} in {dead.queue}")
                return 1
            _print_one(out, found[0])
            return 0
        if args.verb == "purge":
            chosen = dead.select(Filter(args.order_id))
            out.print(f"purged {await dead.drop(chosen)} message(s) from {dead.queue}")
            return 0
        chosen = dead.select(Filter(args.order_id, args.reason), args.limit)
        orders = sorted({m.order_id for m in chosen})
        if args.dry_run:
            what = f"{len(chosen)} message(s) of {len(orders)} order(s)"
            out.print(f"would redrive {what} to {args.downstream}:")
            for m in sorted(chosen, key=lambda m: (m.order_id, m.seq)):
                out.print(f"  {m.order_id} seq {m.seq} {m.event_id} ({m.reason})", highlight=False)
            return 0
        with Progress(
            TextColumn("redriving"), BarColumn(), MofNCompleteColumn(), console=out
        ) as bar:
            task = bar.add_task("", total=len(chosen))
            moved = await dead.redrive(chosen, on_moved=lambda _: bar.advance(task))
        out.print(f"redrove {len(moved)} message(s) of {len(orders)} order(s) to {args.downstream}")
        return 0


def _print_rows(out: Console, rows: list[dict[str, Any]], as_json: bool, total: int) -> None:
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title=f"{len(rows)} of {total} dead letter(s)")
    for column in (
        "event_id",
        "order_id",
        "seq",
        "type",
        "reason",
        "error",
        "failed_at",
        "attempts",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(*(escape(str(row[c])) for c in row if c != "redriven"))
    out.print(table)


def _print_one(out: Console, m: DeadMessage) -> None:
    for key, value in m.row().items():
        out.print(f"{key}: {escape(str(value))}", highlight=False)
    out.print("headers:", highlight=False)
    for key, value in sorted(m.headers.items()):
        if key != ERROR_STACK:
            out.print(f"  {key}: {escape(str(value))}", highlight=False)
    if stack := m.headers.get(ERROR_STACK):
        out.print("stack:\n" + escape(str(stack)), highlight=False)
    out.print("body:\n" + escape(m.body.decode("utf-8", "replace")), highlight=False)


DLQ = Command("dlq", "list, show, redrive or purge a downstream's dead letters", run, _arguments)
