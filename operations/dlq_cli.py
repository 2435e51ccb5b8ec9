"""`python -m topology dlq list|show|redrive|purge <downstream>`."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from common.cli import EXIT_ERROR, EXIT_OK
from events.headers import ERROR_STACK, DeadReason
from operations.dlq import DeadLetters, DeadMessage, Filter
from topology.commands import Command, Context


def _downstream(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("downstream", help="the downstream whose DLQ it reads")


def _by_order(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--order-id", default=None, help="only this order's (default: every order)")


def _by_reason(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reason",
        choices=[r.value for r in DeadReason],
        default=None,
        help="only dead letters with this reason (default: any)",
    )


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    _downstream(parser)
    _by_order(parser)
    _by_reason(parser)
    parser.add_argument(
        "--limit",
        type=_count,
        default=LIST_ROWS,
        help="show at most this many rows; 0 shows all (default: %(default)s)",
    )


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    _downstream(parser)
    parser.add_argument("event_id", help="the dead letter's event_id (its message_id)")


def _redrive_arguments(parser: argparse.ArgumentParser) -> None:
    _downstream(parser)
    _by_order(parser)
    _by_reason(parser)
    parser.add_argument(
        "--limit", type=_count, default=0, help="move at most this many; 0 moves all (default: 0)"
    )
    parser.add_argument("--dry-run", action="store_true", help="show what would move; move nothing")


def _purge_arguments(parser: argparse.ArgumentParser) -> None:
    _downstream(parser)
    _by_order(parser)
    parser.add_argument("--yes", action="store_true", help="confirm the deletion")


LIST_ROWS = 1_000


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _verb(verb: str) -> Callable[[argparse.Namespace, Context], int]:
    def run_verb(args: argparse.Namespace, ctx: Context) -> int:
        args.verb = verb
        return run(args, ctx)

    return run_verb


def run(args: argparse.Namespace, ctx: Context) -> int:
    """Carry out one dlq command; return the exit status."""
    ctx.spec.downstream(args.downstream)
    if args.verb == "purge" and not args.yes:
        return ctx.fail("refusing to purge without --yes (dead letters are deleted for good)")
    return asyncio.run(_run(args, ctx))


async def _run(args: argparse.Namespace, ctx: Context) -> int:
    out = ctx.out
    enough = None
    if args.verb == "show":
        enough = _finds(args.event_id)
    async with DeadLetters(ctx.amqp_url, args.downstream, enough=enough) as dead:
        if dead.shortfall and args.verb in ("redrive", "purge"):
            # Moving part of an order's dead letters while another command holds the rest
            # would split the order; nothing is moved.
            return ctx.fail(f"{dead.shortfall}; nothing was moved")
        if dead.shortfall:
            ctx.err.print(
                f"[yellow]warning:[/] {escape(dead.shortfall)}", highlight=False, soft_wrap=True
            )
        if args.verb == "list":
            matching = dead.select(Filter(args.order_id, args.reason))
            shown = matching[: args.limit] if args.limit else matching
            _print_rows(out, [m.row() for m in shown], args.json, len(matching), dead)
            return EXIT_ERROR if dead.shortfall else EXIT_OK
        if args.verb == "show":
            found = [m for m in dead.messages if m.event_id == args.event_id]
            if not found:
                where = "the part read" if dead.shortfall else dead.queue
                out.print(f"no dead letter with event_id {args.event_id} in {where}")
                return EXIT_ERROR
            if args.json:
                print(json.dumps(_as_json(found[0])))
            else:
                _print_one(out, found[0])
            return EXIT_OK
        if args.verb == "purge":
            chosen = dead.select(Filter(args.order_id))
            purged = await dead.drop(chosen)
            if args.json:
                print(json.dumps({"purged": purged, "queue": dead.queue}))
            else:
                out.print(f"purged {purged} message(s) from {dead.queue}")
            return EXIT_OK
        chosen = dead.select(Filter(args.order_id, args.reason), args.limit or None)
        orders = sorted({m.order_id for m in chosen})
        if args.dry_run and args.json:
            print(json.dumps({"would_redrive": [m.row() for m in _in_order(chosen)]}))
            return EXIT_OK
        if args.dry_run:
            what = f"{len(chosen)} message(s) of {len(orders)} order(s)"
            out.print(f"would redrive {what} to {args.downstream}:")
            for m in _in_order(chosen):
                out.print(f"  {m.order_id} seq {m.seq} {m.event_id} ({m.reason})", highlight=False)
            return 0
        if args.json:
            moved = await dead.redrive(chosen)
            print(json.dumps({"redriven": len(moved), "orders": len(orders)}))
            return EXIT_OK
        with Progress(
            TextColumn("redriving"), BarColumn(), MofNCompleteColumn(), console=out
        ) as bar:
            task = bar.add_task("", total=len(chosen))
            moved = await dead.redrive(chosen, on_moved=lambda _: bar.advance(task))
        out.print(f"redrove {len(moved)} message(s) of {len(orders)} order(s) to {args.downstream}")
        return EXIT_OK


def _in_order(chosen: list[DeadMessage]) -> list[DeadMessage]:
    return sorted(chosen, key=lambda m: (m.order_id, m.seq))


def _as_json(m: DeadMessage) -> dict[str, Any]:
    headers = {
        k: v if isinstance(v, int | float | bool | None) else str(v) for k, v in m.headers.items()
    }
    return {**m.row(), "headers": headers, "body": m.body.decode("utf-8", "replace")}


def _finds(event_id: str) -> Callable[[list[DeadMessage]], bool]:
    """Whether the messages read so far hold `event_id` (each message looked at once)."""
    seen, hit = 0, False

    def found(messages: list[DeadMessage]) -> bool:
        nonlocal seen, hit
        hit = hit or any(m.event_id == event_id for m in itertools.islice(messages, seen, None))
        seen = len(messages)
        return hit

    return found


def _print_rows(
    out: Console, rows: list[dict[str, Any]], as_json: bool, matching: int, dead: DeadLetters
) -> None:
    if as_json:
        print(json.dumps(rows))
        return
    title = f"{len(rows):,} of {matching:,} matching dead letter(s)"
    if matching > len(rows):
        title += " (--limit 0 shows all)"
    if dead.shortfall:
        title += " - partial, see the warning"
    table = Table(title=title)
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


DLQ = Command(
    "dlq",
    "list, show, redrive or purge a downstream's dead letters",
    subcommands=[
        Command(
            "list",
            "a table of the DLQ (nothing is removed)",
            _verb("list"),
            _list_arguments,
            json=True,
        ),
        Command(
            "show", "everything about one dead letter", _verb("show"), _show_arguments, json=True
        ),
        Command(
            "redrive",
            "move dead letters back, order by order in seq order",
            _verb("redrive"),
            _redrive_arguments,
            json=True,
        ),
        Command(
            "purge", "delete dead letters for good", _verb("purge"), _purge_arguments, json=True
        ),
    ],
)
