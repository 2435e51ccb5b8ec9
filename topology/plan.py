"""Diff the desired objects against the live broker: what to create, change, migrate."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from broker.objects import BindingDef, BrokerObjects
from topology import names
from topology.compile import CREATION_ONLY_ARGS
from topology.spec import TopologySpec

# Queue arguments that RabbitMQ cannot change on an existing queue.
_IMMUTABLE_QUEUE_FIELDS = ("durable", "auto_delete")


class Action(StrEnum):
    """What a change does."""

    CREATE = "create"
    UPDATE = "update"  # applied live (policies)
    RESHARD = "reshard"  # a downstream's shard count, changed live (grow, or drain and shrink)
    MIGRATE = "migrate"  # cannot be applied in place
    EXTRA = "extra"  # on the broker, not in the file: deleted only with --prune


@dataclass(frozen=True)
class Change:
    """One difference between the file and the broker."""

    action: Action
    kind: str  # vhost | exchange | queue | binding | policy | downstream
    name: str
    detail: str = ""
    obj: Any = field(default=None, compare=False)
    messages: int | None = field(default=None, compare=False)  # an extra queue's, when read


@dataclass(frozen=True)
class Reshard:
    """A downstream's shards going from `have` to `want`, live."""

    downstream: str
    have: int
    want: int

    @property
    def shrinking(self) -> list[int]:
        """Shards to drain and delete, highest first (removing the newest binding moves
        only its own orders; removing an older one renumbers every later bucket)."""
        return list(range(self.have - 1, self.want - 1, -1))


# Past this many shards the consistent-hash ring a broker rebuilds on restart (bindings in
# name order: d.10 before d.2) differs from the live one (bindings in creation order).
STABLE_RING_SHARDS = 10


@dataclass
class Plan:
    """All differences, in the order apply would act on them."""

    vhost: str
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # not in the naming scheme: never pruned

    def extra(self, kind: str, name: str, detail: str, obj: Any, owned: bool) -> None:
        """An object not in the file: prunable when the naming scheme says it is ours."""
        if owned:
            self.changes.append(Change(Action.EXTRA, kind, name, detail, obj))
        else:
            self.foreign.append(f"{kind} {name}")

    def of(self, action: Action) -> list[Change]:
        """The changes of one action."""
        return [c for c in self.changes if c.action is action]

    @property
    def pending(self) -> bool:
        """Whether the broker differs from the file at all."""
        return bool(self.changes)

    @property
    def migrations(self) -> list[Change]:
        """Changes that cannot be applied in place."""
        return self.of(Action.MIGRATE)


def make_plan(
    spec: TopologySpec, desired: BrokerObjects, live: BrokerObjects | None, vhost: str
) -> Plan:
    """Compare desired with live (None when the vhost does not exist)."""
    plan = Plan(vhost)
    if live is None:
        plan.changes.append(Change(Action.CREATE, "vhost", vhost))
        live = BrokerObjects()
    resharded = _reshards(spec, live, plan)
    entry = {spec.exchange.name, spec.exchange.alternate_exchange, spec.log.name}
    _diff_exchanges(desired, live, plan, entry)
    _diff_queues(desired, live, plan, resharded, entry)
    _diff_policies(desired, live, plan, entry)
    _diff_bindings(desired, live, plan, resharded, entry)
    if plan.foreign:
        shown = ", ".join(plan.foreign[:5])
        more = f" and {len(plan.foreign) - 5} more" if len(plan.foreign) > 5 else ""
        plan.notes.append(
            f"{len(plan.foreign)} object(s) on the broker are outside the bus's naming scheme "
            f"and are never pruned: {shown}{more}"
        )
    return plan


def _reshards(spec: TopologySpec, live: BrokerObjects, plan: Plan) -> set[str]:
    """A changed shard count per downstream: a live reshard, or refused with its reason.

    Returns the downstreams whose shard queues and hash bindings the other diffs must skip:
    shrinking ones (the reshard step drains and deletes the shards going away) and refused
    ones. Growing needs no skip: the new queues and bindings are ordinary creations, bound in
    index order.
    """
    affected = set()
    for d, ds in spec.downstreams.items():
        pattern = re.compile(names.shard_pattern(d))
        indices = sorted(int(q.rsplit(".", 1)[1]) for q in live.queues if pattern.match(q))
        if not indices or (len(indices) == ds.shards and indices[-1] == ds.shards - 1):
            continue
        affected.add(d)
        if indices != list(range(len(indices))):
            found = ", ".join(names.shard(d, i) for i in indices)
            detail = f"its shards are not {d}.0 … {d}.{len(indices) - 1} ({found}): reshard by hand"
            plan.changes.append(Change(Action.MIGRATE, "downstream", d, detail))
            continue
        step = Reshard(d, len(indices), ds.shards)
        plan.changes.append(Change(Action.RESHARD, "downstream", d, _describe(step), step))
        if step.want > step.have:
            affected.discard(d)
        if ds.shards > STABLE_RING_SHARDS:
            plan.notes.append(
                f"{d}: more than {STABLE_RING_SHARDS} shards; after a broker restart the hash ring "
                "is rebuilt in name order and most orders move once (they wait behind their "
                "earlier events; none is reordered)"
            )
    return affected


def _describe(step: Reshard) -> str:
    d, have, want = step.downstream, step.have, step.want
    if want > have:
        new = names.shard(d, have) if want - have == 1 else f"{d}.{have} … {d}.{want - 1}"
        return (
            f"shards {have} -> {want}: create and bind {new} in order; each new shard takes about "
            "1/(n+1) of the orders from the others, and a moved order's new events wait for its "
            "earlier ones"
        )
    gone = ", ".join(names.shard(d, i) for i in step.shrinking)
    return (
        f"shards {have} -> {want}: unbind {gone} (newest first), let their owners drain them, "
        "delete each once it holds nothing, ready or unacked"
    )


def _fields_differ(want: object, have: object, fields: tuple[str, ...]) -> list[str]:
    return [
        f"{f} {getattr(have, f)!r} -> {getattr(want, f)!r}"
        for f in fields
        if getattr(want, f) != getattr(have, f)
    ]


def _args_differ(want: dict[str, Any], have: dict[str, Any]) -> list[str]:
    return [
        f"{k} {have.get(k)!r} -> {want.get(k)!r}"
        for k in sorted(set(want) | set(have))
        if want.get(k) != have.get(k)
    ]


def _lasting(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if k not in CREATION_ONLY_ARGS}


def _diff_exchanges(
    desired: BrokerObjects, live: BrokerObjects, plan: Plan, entry: set[str]
) -> None:
    for name, want in desired.exchanges.items():
        have = live.exchanges.get(name)
        if have is None:
            plan.changes.append(Change(Action.CREATE, "exchange", name, want.type, want))
            continue
        diffs = _fields_differ(want, have, ("type", "durable", "auto_delete", "internal"))
        diffs += _args_differ(want.arguments, have.arguments)
        if diffs:
            plan.changes.append(Change(Action.MIGRATE, "exchange", name, "; ".join(diffs), want))
    for name, have in live.exchanges.items():
        if name not in desired.exchanges and name and not name.startswith("amq."):
            ours = names.owned("exchange", name, entry, have.type)
            plan.extra("exchange", name, have.type, have, ours)


def _diff_queues(
    desired: BrokerObjects, live: BrokerObjects, plan: Plan, skip: set[str], entry: set[str]
) -> None:
    skipped = [re.compile(names.shard_pattern(d)) for d in skip]
    placed: list[str] = []
    for name, want in desired.queues.items():
        if any(p.match(name) for p in skipped):
            continue
        have = live.queues.get(name)
        if have is None:
            plan.changes.append(Change(Action.CREATE, "queue", name, want.queue_type, want))
            continue
        diffs = _fields_differ(want, have, _IMMUTABLE_QUEUE_FIELDS)
        diffs += _args_differ(_lasting(want.arguments), _lasting(have.arguments))
        if diffs:
            plan.changes.append(Change(Action.MIGRATE, "queue", name, "; ".join(diffs), want))
        elif placement := _args_differ(want.arguments, have.arguments):
            placed.append(f"{name} ({'; '.join(placement)})")
    if placed:
        plan.notes.append(
            f"{len(placed)} queue(s) were created with other replication settings, which apply "
            "only at creation (`topology status` shows their live members; `rabbitmq-queues "
            f"grow` / `shrink` change them): {', '.join(placed[:3])}"
            + (f" and {len(placed) - 3} more" if len(placed) > 3 else "")
        )
    for name, have in live.queues.items():
        if name in desired.queues or name.startswith("amq.") or any(p.match(name) for p in skipped):
            continue
        plan.extra("queue", name, have.queue_type, have, names.owned("queue", name, entry))


def _diff_policies(
    desired: BrokerObjects, live: BrokerObjects, plan: Plan, entry: set[str]
) -> None:
    for name, want in desired.policies.items():
        have = live.policies.get(name)
        if have is None:
            plan.changes.append(
                Change(Action.CREATE, "policy", name, _render(want.definition), want)
            )
            continue
        diffs = _fields_differ(want, have, ("pattern", "apply_to", "priority"))
        diffs += _args_differ(want.definition, have.definition)
        if diffs:
            plan.changes.append(Change(Action.UPDATE, "policy", name, "; ".join(diffs), want))
    for name, have in live.policies.items():
        if name not in desired.policies:
            plan.extra("policy", name, have.pattern, have, names.owned("policy", name, entry))


def _diff_bindings(
    desired: BrokerObjects, live: BrokerObjects, plan: Plan, skip: set[str], entry: set[str]
) -> None:
    def label(b: BindingDef) -> str:
        return f"{b.source} -> {b.destination_type} {b.destination} [{b.routing_key}]"

    def resharded(b: BindingDef) -> bool:
        return b.source in skip and b.destination_type == "queue"

    def ours(name: str, kind: str) -> bool:
        exchange = live.exchanges.get(name) if kind == "exchange" else None
        return names.owned(kind, name, entry, exchange.type if exchange else None)

    for key, want in desired.bindings.items():
        if key not in live.bindings and not resharded(want):
            plan.changes.append(Change(Action.CREATE, "binding", label(want), "", want))
    for key, have in live.bindings.items():
        # Bindings of the default exchange are implicit and cannot be removed.
        if key not in desired.bindings and have.source and not resharded(have):
            plan.extra(
                "binding",
                label(have),
                "",
                have,
                ours(have.source, "exchange") and ours(have.destination, have.destination_type),
            )


def _render(definition: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in definition.items())
