"""Apply a plan to the broker through the management API."""

from __future__ import annotations

from collections.abc import Callable

from topology.management import ManagementClient
from topology.model import BindingDef, BrokerObjects, ExchangeDef, PolicyDef, QueueDef
from topology.plan import Action, Change, Plan, make_plan
from topology.spec import TopologySpec

# Policies first, so every queue starts with its limits and dead-letter targets; bindings
# after both of their ends; pruning removes bindings before what they bind.
_ORDER: list[tuple[Action, type]] = [
    (Action.CREATE, PolicyDef),
    (Action.UPDATE, PolicyDef),
    (Action.CREATE, ExchangeDef),
    (Action.CREATE, QueueDef),
    (Action.CREATE, BindingDef),
    (Action.EXTRA, BindingDef),
    (Action.EXTRA, QueueDef),
    (Action.EXTRA, ExchangeDef),
    (Action.EXTRA, PolicyDef),
]


class MigrationRequired(Exception):
    """The file changes something the broker cannot change in place."""

    def __init__(self, changes: list[Change]) -> None:
        self.changes = changes
        lines = [f"{c.kind} {c.name}: {c.detail}" for c in changes]
        super().__init__("needs a migration; nothing was changed:\n  " + "\n  ".join(lines))


def plan_against(
    client: ManagementClient, spec: TopologySpec, desired: BrokerObjects, vhost: str
) -> Plan:
    """Read the live vhost and diff it against the desired objects."""
    live = client.read_objects(vhost) if client.vhost_exists(vhost) else None
    return make_plan(spec, desired, live, vhost)


def apply_plan(
    client: ManagementClient,
    plan: Plan,
    prune: bool = False,
    on_change: Callable[[Change], None] | None = None,
) -> list[Change]:
    """Carry out a plan; refuse it whole if it needs a migration. Returns what was done."""
    if plan.migrations:
        raise MigrationRequired(plan.migrations)
    done: list[Change] = []
    vhost_change = next((c for c in plan.changes if c.kind == "vhost"), None)
    if vhost_change:
        client.create_vhost(plan.vhost)
        done.append(vhost_change)
    for action, kind in _ORDER:
        if action is Action.EXTRA and not prune:
            continue
        for change in plan.of(action):
            if isinstance(change.obj, kind):
                _act(client, plan.vhost, change)
                done.append(change)
                if on_change:
                    on_change(change)
    return done


def _act(client: ManagementClient, vhost: str, change: Change) -> None:
    obj = change.obj
    if change.action is not Action.EXTRA:
        if isinstance(obj, PolicyDef):
            client.put_policy(vhost, obj)
        elif isinstance(obj, ExchangeDef):
            client.declare_exchange(vhost, obj)
        elif isinstance(obj, QueueDef):
            client.declare_queue(vhost, obj)
        elif isinstance(obj, BindingDef):
            client.bind(vhost, obj)
    elif isinstance(obj, BindingDef):
        client.unbind(vhost, obj)
    else:
        kind = {PolicyDef: "policies", ExchangeDef: "exchanges", QueueDef: "queues"}[type(obj)]
        client.delete(kind, vhost, obj.name)
