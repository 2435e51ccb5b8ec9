"""`python -m topology plan|apply|export`: the operator's view of the broker objects."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiormq.exceptions import AMQPError
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TextColumn

from topology import dlq_cli, status_cli
from topology.apply import MigrationRequired, apply_plan, plan_against
from topology.compile import compile_topology
from topology.diagram import document
from topology.dlq import UnknownDownstream
from topology.export import definitions
from topology.management import ManagementClient, ManagementError
from topology.plan import Action, Change, Plan
from topology.replay import parse_time, replay
from topology.settings import SettingsError, load_settings, with_vhost
from topology.spec import TopologyFileError, load_spec

EXIT_OK, EXIT_ERROR, EXIT_PENDING = 0, 1, 2

_STYLE = {
    Action.CREATE: ("+", "green"),
    Action.UPDATE: ("~", "yellow"),
    Action.MIGRATE: ("!", "bold red"),
    Action.EXTRA: ("-", "magenta"),
}


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(prog="python -m topology", description=__doc__)
    parser.add_argument(
        "--file",
        type=Path,
        default=None,
        help="topology file (default: $TOPOLOGY_FILE or topology/orders.yaml)",
    )
    parser.add_argument("--vhost", default=None, help="vhost (default: the path of $AMQP_URL)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plan", help="show what differs on the broker (exit 0 same, 2 pending, 1 error)")
    apply = sub.add_parser("apply", help="create what is missing and change policies live")
    apply.add_argument("--prune", action="store_true", help="also delete objects not in the file")
    sub.add_parser("export", help="print definitions JSON for rabbitmqctl import_definitions")
    dlq_cli.add_parser(sub)
    status_cli.add_parser(sub)
    sub.add_parser("diagram", help="print docs/topology.md (Mermaid diagrams of the file)")
    rp = sub.add_parser("replay", help="re-feed one downstream from the orders.log stream")
    rp.add_argument("downstream")
    rp.add_argument("--since", required=True, help="ISO time or a duration ago (15m, 2h, 7d)")
    rp.add_argument("--until", default=None, help="ISO time or a duration ago (default: now)")
    rp.add_argument("--order-id", default=None)
    rp.add_argument(
        "--reapply",
        action="store_true",
        help="the downstream's store was wiped: workers re-read each order's progress from it",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return the exit status."""
    args = build_parser().parse_args(argv)
    out, err = Console(), Console(stderr=True)
    try:
        settings = load_settings()
    except SettingsError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return EXIT_ERROR
    path = args.file or settings.topology_file
    vhost = args.vhost or settings.vhost
    try:
        spec = load_spec(path)
        desired = compile_topology(spec)
        if args.command == "export":
            print(json.dumps(definitions(desired, vhost), indent=2))
            return EXIT_OK
        if args.command == "diagram":
            print(document(spec), end="")
            return EXIT_OK
        if args.command == "replay":
            return asyncio.run(_replay(args, spec, with_vhost(settings.amqp_url, vhost), out))
        if args.command == "dlq":
            return asyncio.run(dlq_cli.run(args, spec, with_vhost(settings.amqp_url, vhost), out))
        with ManagementClient(
            settings.rabbitmq_management_url, ca_file=settings.management_ca_file
        ) as client:
            if args.command == "status":
                url = with_vhost(settings.amqp_url, vhost)
                return asyncio.run(status_cli.run(args, spec, url, client, vhost, out))
            plan = plan_against(client, spec, desired, vhost)
            if args.command == "plan":
                render_plan(out, plan, path)
                return EXIT_PENDING if plan.pending else EXIT_OK
            return _apply(out, client, plan, args.prune)
    except TopologyFileError as exc:
        err.print(exc.render(), markup=False, highlight=False)
    except MigrationRequired as exc:
        err.print(f"[bold red]refused:[/] vhost {vhost!r} {exc}", highlight=False)
    except ManagementError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
    except UnknownDownstream as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    except (AMQPError, OSError) as exc:
        err.print(
            f"[bold red]error:[/] the broker at AMQP_URL failed: {escape(repr(exc))}",
            highlight=False,
        )
    return EXIT_ERROR


def _apply(out: Console, client: ManagementClient, plan: Plan, prune: bool) -> int:
    if not plan.pending:
        out.print(f"vhost {plan.vhost!r}: nothing to change")
        for note in plan.notes:
            out.print(f"note: {note}", highlight=False)
        return EXIT_OK
    done = apply_plan(client, plan, prune=prune, on_change=lambda c: _print_change(out, c))
    kept = [] if prune else plan.of(Action.EXTRA)
    out.print(f"vhost {plan.vhost!r}: applied {len(done)} change(s)")
    for note in plan.notes:
        out.print(f"note: {note}", highlight=False)
    if kept:
        out.print(f"{len(kept)} object(s) on the broker are not in the file; kept (use --prune)")
    return EXIT_OK


async def _replay(args: argparse.Namespace, spec: Any, amqp_url: str, out: Console) -> int:
    if args.downstream not in spec.downstreams:
        known = ", ".join(spec.downstreams)
        raise UnknownDownstream(
            f"unknown downstream {args.downstream!r}; the file declares: {known}"
        )
    try:
        since = parse_time(args.since)
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        Console(stderr=True).print(f"error: {exc}", highlight=False)
        return EXIT_ERROR
    with Progress(TextColumn("{task.description}"), console=out, transient=True) as bar:
        task = bar.add_task("replaying")
        stats = await replay(
            amqp_url,
            spec.log.name,
            args.downstream,
            since,
            until,
            args.order_id,
            args.reapply,
            on_event=lambda s: bar.update(
                task, description=f"read {s.read}, replayed {s.replayed}"
            ),
        )
    out.print(
        f"replayed {stats.replayed} event(s) to {args.downstream} from {spec.log.name} "
        f"since {since.isoformat()} (read {stats.read}, skipped {stats.skipped})"
        + (", marked for reapply" if args.reapply else ""),
        highlight=False,
    )
    return EXIT_OK


def render_plan(out: Console, plan: Plan, path: Path) -> None:
    """Print a plan as a readable diff."""
    out.print(f"plan for vhost {plan.vhost!r} from {path}", highlight=False)
    for note in plan.notes:
        out.print(f"note: {note}", highlight=False)
    if not plan.pending:
        out.print("[green]the broker matches the file[/]")
        return
    for change in plan.changes:
        _print_change(out, change)
    counts = {a: len(plan.of(a)) for a in Action}
    out.print(
        f"{counts[Action.CREATE]} to create, {counts[Action.UPDATE]} to change live, "
        f"{counts[Action.MIGRATE]} needing a migration, {counts[Action.EXTRA]} not in the file",
        highlight=False,
    )
    if plan.migrations:
        out.print("[bold red]apply will refuse until the migrations are done by hand[/]")


def _print_change(out: Console, change: Change) -> None:
    sign, style = _STYLE[change.action]
    note = {
        Action.UPDATE: " (live)",
        Action.MIGRATE: " (needs migration)",
        Action.EXTRA: " (not in file; apply --prune deletes)",
    }.get(change.action, "")
    detail = f": {change.detail}" if change.detail else ""
    text = escape(f"{sign} {change.action.value} {change.kind} {change.name}{detail}{note}")
    out.print(
        f"[{style}]{text}[/]",
        markup=True,
        highlight=False,
        soft_wrap=True,
    )


if __name__ == "__main__":
    sys.exit(main())
