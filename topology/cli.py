"""`python -m topology plan|apply|export|diagram`: the operator's view of the broker objects."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.status import Status

from broker.management import ManagementClient
from common.cli import EXIT_ERROR, EXIT_OK, EXIT_PENDING, duration, package_version
from topology import kubernetes, monitoring, reference, replicas, reshard, workloads
from topology.access import desired_users
from topology.apply import MigrationRequired, apply_plan, plan_against
from topology.commands import Command, Context
from topology.compile import compile_topology
from topology.contract import asyncapi, file_schema
from topology.diagram import document
from topology.export import definitions
from topology.plan import Action, Change, Plan, Reshard
from topology.render import yaml_documents

_STYLE = {
    Action.CREATE: ("+", "green"),
    Action.UPDATE: ("~", "yellow"),
    Action.RESHARD: ("~", "cyan"),
    Action.MIGRATE: ("!", "bold red"),
    Action.EXTRA: ("-", "magenta"),
}
_NOTE = {
    Action.UPDATE: " (live)",
    Action.RESHARD: " (live reshard)",
    Action.MIGRATE: " (needs migration)",
    Action.EXTRA: " (not in file; apply --prune deletes)",
}


def _plan(ctx: Context) -> Plan:
    with ctx.management() as client:
        return plan_against(client, ctx.spec, compile_topology(ctx.spec), ctx.vhost)


def run_plan(args: argparse.Namespace, ctx: Context) -> int:
    """Show what differs on the broker: exit 0 when it matches, 3 when changes are pending."""
    plan = _plan(ctx)
    if args.json:
        print(json.dumps(plan_json(plan, str(ctx.path))))
    else:
        render_plan(ctx.out, plan, str(ctx.path))
    return EXIT_PENDING if plan.pending else EXIT_OK


def plan_json(plan: Plan, path: str) -> dict[str, object]:
    """A plan as one JSON document, for CI pipelines."""
    return {
        "vhost": plan.vhost,
        "file": path,
        "pending": plan.pending,
        "changes": [
            {"action": c.action.value, "kind": c.kind, "name": c.name, "detail": c.detail}
            for c in plan.changes
        ],
        "counts": {a.value: len(plan.of(a)) for a in Action},
        "notes": plan.notes,
        "needs_migration": bool(plan.migrations),
    }


def _guard_prune(args: argparse.Namespace, ctx: Context, plan: Plan) -> int | None:
    """--prune lists what it deletes and needs --yes; a queue holding messages is kept
    unless --force. Returns an exit status when the run must stop."""
    extra = plan.of(Action.EXTRA)
    if not args.prune or not extra:
        return None
    if not args.yes:
        for change in extra:
            ctx.err.print(f"  - {change.kind} {escape(change.name)} {change.detail}")
        return ctx.fail(
            f"refusing to prune {len(extra)} object(s) without --yes (listed above; "
            "nothing was changed)"
        )
    full = [c for c in extra if c.kind == "queue" and c.messages and not args.force]
    for change in full:
        ctx.out.print(
            f"[yellow]kept queue {escape(change.name)}: it holds {change.messages} message(s) "
            "(--force deletes it)[/]"
        )
        plan.changes.remove(change)
    kept = {c.name for c in full}
    for change in [c for c in plan.of(Action.EXTRA) if c.kind == "binding"]:
        if change.obj.destination_type == "queue" and change.obj.destination in kept:
            plan.changes.remove(change)  # a kept queue keeps its bindings
    return None


def run_apply(args: argparse.Namespace, ctx: Context) -> int:
    """Create what is missing, change policies live, and with --prune delete what is extra."""
    out = ctx.out
    with ctx.management() as client:
        plan = plan_against(client, ctx.spec, compile_topology(ctx.spec), ctx.vhost)
        if (stop := _guard_prune(args, ctx, plan)) is not None:
            return stop
        if not plan.pending:
            out.print(f"vhost {plan.vhost!r}: nothing to change")
            _notes(out, plan)
            _balance(out, client)
            return EXIT_OK
        try:
            with Status("", console=ctx.err) as status:

                def waiting(queue: str, messages: int) -> None:
                    status.update(f"draining {queue}: {messages} message(s) left")

                def shrink(step: Reshard) -> None:
                    timeout = args.drain_timeout
                    for queue in reshard.shrink(client, ctx.vhost, step, timeout, waiting):
                        out.print(f"[magenta]- deleted queue {escape(queue)} (drained)[/]")

                done = apply_plan(
                    client,
                    plan,
                    prune=args.prune,
                    on_change=lambda c: _print_change(out, c),
                    shrink=shrink,
                )
        except MigrationRequired as exc:
            ctx.err.print(f"[bold red]refused:[/] vhost {ctx.vhost!r} {exc}", highlight=False)
            return EXIT_ERROR
        except reshard.DrainTimeout as exc:
            return ctx.fail(str(exc))
        _balance(out, client)
    kept = [] if args.prune else plan.of(Action.EXTRA)
    out.print(f"vhost {plan.vhost!r}: applied {len(done)} change(s)")
    _notes(out, plan)
    if kept:
        out.print(f"{len(kept)} object(s) on the broker are not in the file; kept (use --prune)")
    return EXIT_OK


def _balance(out: Console, client: ManagementClient) -> None:
    """On a cluster, move quorum queue leaders off the nodes that lead more than their share."""
    moved = replicas.balance_leaders(client)
    if moved is None:
        return
    before, after = (", ".join(f"{n} {c}" for n, c in sorted(x.items())) for x in moved)
    state = (
        "balanced"
        if replicas.balanced(moved[1])
        else f"[yellow]still moving after {replicas.BALANCE_WITHIN:.0f} s; the broker goes on[/]"
    )
    out.print(
        f"quorum leaders rebalanced (all vhosts): {before} -> {after} ({state})", highlight=False
    )


def _apply_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prune",
        action="store_true",
        help="also delete what the file no longer has (only objects of the bus's naming scheme; "
        "needs --yes)",
    )
    parser.add_argument("--yes", action="store_true", help="confirm what --prune deletes")
    parser.add_argument(
        "--force", action="store_true", help="let --prune delete queues that still hold messages"
    )
    parser.add_argument(
        "--drain-timeout",
        type=duration,
        default=reshard.DRAIN_TIMEOUT,
        metavar="DURATION",
        help="how long a shrinking downstream's shards may take to drain, e.g. 10m "
        "(default: %(default)s seconds)",
    )


def run_export(args: argparse.Namespace, ctx: Context) -> int:
    """Print definitions JSON for `rabbitmqctl import_definitions`, or the Messaging Topology
    Operator's resources (YAML)."""
    objects = compile_topology(ctx.spec)
    if args.format == "k8s":
        resources = kubernetes.resources(
            ctx.spec,
            objects,
            ctx.vhost,
            desired_users(ctx.spec),
            cluster=args.cluster,
            namespace=args.namespace,
        )
        print(yaml_documents(resources, _K8S_HEADER.format(path=_shown(ctx.path))), end="")
        return EXIT_OK
    print(json.dumps(definitions(objects, ctx.vhost), indent=2))
    return EXIT_OK


_K8S_HEADER = """The topology of {path} as RabbitMQ Messaging Topology Operator resources
(python -m topology export --format k8s). Queues and the vhost carry deletionPolicy: retain:
deleting one of these resources never deletes a queue's messages. Every password comes from the
Secret a User names (keys username and password, label rabbitmq.com/topology-operator: "true").
Resharding and removing a downstream: docs/deploy.md#kubernetes."""


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=["json", "k8s"],
        default="json",
        help="json: a definitions document; k8s: Messaging Topology Operator resources "
        "(default: json)",
    )
    _k8s_common(parser)


def _k8s_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster",
        default="rabbitmq",
        help="the RabbitmqCluster the resources belong to (default: %(default)s)",
    )
    parser.add_argument(
        "--namespace",
        default="order-event-bus",
        help="the namespace of the resources (default: %(default)s)",
    )


def run_k8s(args: argparse.Namespace, ctx: Context) -> int:
    """Write deploy/k8s: the topology, the workers, their autoscaling, the relay, monitoring."""
    spec, out = ctx.spec, args.out
    ns, image = args.namespace, args.image
    objects = compile_topology(spec)
    topology = kubernetes.resources(
        spec, objects, ctx.vhost, desired_users(spec), cluster=args.cluster, namespace=ns
    )
    header = (
        f"Generated from {_shown(ctx.path)} by python -m topology k8s; edit the file, not this."
    )
    files = {
        "topology.yaml": (topology, _K8S_HEADER.format(path=_shown(ctx.path))),
        "config.yaml": (workloads.config_map(ctx.path.read_text(), ns), header),
        "workers.yaml": (workloads.workers(spec, ns, image), header),
        "autoscaling.yaml": (workloads.scalers(spec, ns, ctx.vhost), header),
        "relay.yaml": (workloads.relay(ns, image), header),
        "monitoring.yaml": (workloads.monitoring(ns), header),
        "topology-job.yaml": (
            workloads.topology_job(ns, image),
            header + "\nWhere the Messaging Topology Operator does not run: apply this Job "
            "instead of topology.yaml.",
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, (resources, text) in files.items():
        (out / name).write_text(yaml_documents(resources, text))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": ns,
        "resources": [n for n in files if n != "topology-job.yaml"],
    }
    (out / "kustomization.yaml").write_text(yaml_documents([kustomization], header))
    ctx.out.print(f"wrote {len(files) + 1} files to {out}", highlight=False)
    return EXIT_OK


def run_monitoring(args: argparse.Namespace, ctx: Context) -> int:
    """Write monitoring/alerts.yml and monitoring/prometheus.yml from the file."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    source = f"Generated from {_shown(ctx.path)} by python -m topology monitoring; edit the file."
    (out / "alerts.yml").write_text(
        yaml_documents(
            [monitoring.alert_rules(ctx.spec)],
            source + "\nThe bus's alert rules; each names its runbook in docs/operations.md.",
        )
    )
    (out / "prometheus.yml").write_text(
        yaml_documents(
            [monitoring.scrape_config(ctx.spec)],
            source + "\nPrometheus for docker compose: the broker, every worker, the relay.",
        )
    )
    ctx.out.print(f"wrote alerts.yml and prometheus.yml to {out}", highlight=False)
    return EXIT_OK


def _monitoring_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("monitoring"), help="the folder (default: %(default)s)"
    )


def _shown(path: Path) -> str:
    """A path as a generated file names it: relative to here, never this machine's."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return path.name


def _k8s_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("deploy/k8s"), help="the folder (default: %(default)s)"
    )
    parser.add_argument(
        "--image",
        default=f"order-event-bus:{package_version()}",
        help="the bus's image (default: %(default)s)",
    )
    _k8s_common(parser)


def run_diagram(args: argparse.Namespace, ctx: Context) -> int:
    """Print docs/topology.md: Mermaid diagrams of the file."""
    print(document(ctx.spec), end="")
    return EXIT_OK


def run_asyncapi(args: argparse.Namespace, ctx: Context) -> int:
    """Print docs/asyncapi.json: the AsyncAPI 3.0 document of the file and the events."""
    print(json.dumps(asyncapi(ctx.spec, ctx.amqp_url), indent=2))
    return EXIT_OK


def run_schema(args: argparse.Namespace, ctx: Context) -> int:
    """Print docs/topology.schema.json: the topology file's JSON Schema, for editors (or, with
    --markdown, docs/configuration.md's tables of the file's keys)."""
    if args.markdown:
        print(reference.markdown(), end="")
        return EXIT_OK
    print(json.dumps(file_schema(), indent=2))
    return EXIT_OK


def _schema_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="the file's keys as Markdown tables (docs/configuration.md's reference)",
    )


COMMANDS = [
    Command(
        "plan",
        "show what differs on the broker (exit 0 same, 3 pending, 1 error)",
        run_plan,
        json=True,
    ),
    Command(
        "apply", "create what is missing and change policies live", run_apply, _apply_arguments
    ),
    Command(
        "export",
        "print definitions JSON for rabbitmqctl import_definitions, or --format k8s: the "
        "Messaging Topology Operator's resources",
        run_export,
        _export_arguments,
        json=True,
    ),
    Command(
        "monitoring",
        "write monitoring/alerts.yml and prometheus.yml: alert rules and scrape targets for "
        "the file's downstreams",
        run_monitoring,
        _monitoring_arguments,
    ),
    Command(
        "k8s",
        "write deploy/k8s: the topology's operator resources, the workers, KEDA autoscaling, "
        "the relay and monitoring",
        run_k8s,
        _k8s_arguments,
    ),
    Command("diagram", "print docs/topology.md (Mermaid diagrams of the file)", run_diagram),
    Command(
        "asyncapi",
        "print docs/asyncapi.json (the AsyncAPI 3.0 contract)",
        run_asyncapi,
        json=True,
    ),
    Command(
        "schema",
        "print docs/topology.schema.json (the file's JSON Schema)",
        run_schema,
        _schema_arguments,
        json=True,
    ),
]


def _notes(out: Console, plan: Plan) -> None:
    for note in plan.notes:
        out.print(f"note: {note}", highlight=False)


def render_plan(out: Console, plan: Plan, path: str) -> None:
    """Print a plan as a readable diff."""
    out.print(f"plan for vhost {plan.vhost!r} from {path}", highlight=False)
    _notes(out, plan)
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
    note = _NOTE.get(change.action, "")
    detail = f": {change.detail}" if change.detail else ""
    text = escape(f"{sign} {change.action.value} {change.kind} {change.name}{detail}{note}")
    out.print(f"[{style}]{text}[/]", markup=True, highlight=False, soft_wrap=True)
