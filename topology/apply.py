"""Apply a plan to the broker through the management API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from broker.management import ManagementClient
from broker.objects import BindingDef, BrokerObjects, ExchangeDef, PolicyDef, QueueDef
from topology import reshard
from topology.access import UserDef, desired_users, password_matches
from topology.plan import Action, Change, Plan, Reshard, make_plan
from topology.spec import TopologySpec

# Policies first, so every queue starts with its limits and dead-letter targets; bindings
# after both of their ends; pruning removes bindings before what they bind.
_ORDER: list[tuple[Action, type]] = [
    (Action.CREATE, PolicyDef),
    (Action.UPDATE, PolicyDef),
    (Action.CREATE, ExchangeDef),
    (Action.CREATE, QueueDef),
    (Action.CREATE, BindingDef),
    (Action.CREATE, UserDef),
    (Action.UPDATE, UserDef),
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
    exists = client.vhost_exists(vhost)
    live = client.read_objects(vhost) if exists else None
    plan = make_plan(spec, desired, live, vhost)
    _plan_access(client, spec, vhost, exists, plan)
    _count_extra_queues(client, plan)
    return plan


def _count_extra_queues(client: ManagementClient, plan: Plan) -> None:
    """What prune would delete with each extra queue: its messages (ready and unacked)."""
    extra = [
        i for i, c in enumerate(plan.changes) if c.action is Action.EXTRA and c.kind == "queue"
    ]
    if not extra:
        return
    messages = {
        q["name"]: int(q.get("messages") or 0) for q in client.list_objects("queues", plan.vhost)
    }
    for i in extra:
        change = plan.changes[i]
        count = messages.get(change.name, 0)
        detail = f"{change.detail}, {count} message(s)"
        plan.changes[i] = replace(change, detail=detail, messages=count)


def _plan_access(
    client: ManagementClient, spec: TopologySpec, vhost: str, exists: bool, plan: Plan
) -> None:
    """Users per role and their permissions: created, or changed live."""
    for user in desired_users(spec):
        password = user.password
        if password is None:
            plan.notes.append(f"user {user.name}: ${user.password_env} is not set; not created")
            continue
        live = client.get_user(user.name)
        if live is None:
            plan.changes.append(
                Change(Action.CREATE, "user", user.name, user.tags or "no tags", user)
            )
        elif not password_matches(password, live.get("password_hash", "")) or sorted(
            live.get("tags") or []
        ) != sorted(t for t in user.tags.split(",") if t):
            plan.changes.append(Change(Action.UPDATE, "user", user.name, "password or tags", user))
        have = client.permissions(vhost, user.name) if exists else None
        want = {"configure": user.configure, "write": user.write, "read": user.read}
        if have is None:
            plan.changes.append(Change(Action.CREATE, "permissions", user.name, _perm(want), user))
        elif any(have.get(k) != v for k, v in want.items()):
            plan.changes.append(Change(Action.UPDATE, "permissions", user.name, _perm(want), user))


def _perm(p: dict[str, str]) -> str:
    return f"configure {p['configure']!r} write {p['write']!r} read {p['read']!r}"


def apply_plan(
    client: ManagementClient,
    plan: Plan,
    prune: bool = False,
    on_change: Callable[[Change], None] | None = None,
    shrink: Callable[[Reshard], object] | None = None,
) -> list[Change]:
    """Carry out a plan; refuse it whole if it needs a migration. Returns what was done.

    A downstream that grows gets its new shards through ordinary creations; one that
    shrinks is drained last (`topology.reshard.shrink`, or `shrink` when given).
    """
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
    for change in plan.of(Action.RESHARD):
        step = change.obj
        if isinstance(step, Reshard) and step.want < step.have:
            if shrink is not None:
                shrink(step)
            else:
                reshard.shrink(client, plan.vhost, step)
        done.append(change)
        if on_change:
            on_change(change)
    return done


def _act(client: ManagementClient, vhost: str, change: Change) -> None:
    obj = change.obj
    if isinstance(obj, UserDef):
        password = obj.password
        if change.kind == "user" and password is not None:
            client.put_user(obj.name, password, obj.tags)
        elif change.kind == "permissions":
            client.set_permissions(vhost, obj.name, obj.configure, obj.write, obj.read)
        return
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
