"""The topology as Kubernetes resources of the RabbitMQ Messaging Topology Operator (pure).

The same objects `apply` declares, as `rabbitmq.com/v1beta1` resources: a Vhost, an Exchange,
Queue, Binding and Policy per broker object, and a User and a Permission per role of the
file's `access` section (each password from a Secret, never written here). The operator's
rules shape them:
- a queue's arguments are immutable, so what changes live is carried by Policies, as with
  `apply`;
- deleting a Queue or Vhost resource would delete the queue and its messages: they carry
  `deletionPolicy: retain`, so removing a resource never drops messages silently (the queue
  stays on the broker until an operator deletes it on purpose);
- a Binding cannot change: a new weight or key is a new resource.
`from_resources` reads the resources back into broker objects, which a test compares with
what `apply` declares.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

from broker.objects import BindingDef, BrokerObjects, ExchangeDef, PolicyDef, QueueDef
from topology.access import UserDef
from topology.spec import TopologySpec

API = "rabbitmq.com/v1beta1"
PART_OF = "order-event-bus"
LABEL_DOWNSTREAM = "order-event-bus/downstream"
ANNOTATION_USER = "order-event-bus/user"
# The operator's webhook refuses a User whose credentials Secret lacks this label (v1.20+).
SECRET_LABEL = {"rabbitmq.com/topology-operator": "true"}
Resource = dict[str, Any]


def slug(name: str) -> str:
    """A broker name as a Kubernetes object name (lowercase letters, digits, '-' and '.')."""
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")
    return cleaned or "default"


def _metadata(name: str, namespace: str | None, downstream: str | None) -> Resource:
    labels = {"app.kubernetes.io/part-of": PART_OF}
    if downstream is not None:
        labels[LABEL_DOWNSTREAM] = downstream.replace("_", "-")
    meta: Resource = {"name": name[:253], "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _owner(spec: TopologySpec, name: str) -> str | None:
    """The downstream an object belongs to, by the naming scheme (None: the entry objects)."""
    for d in spec.downstreams:
        if name == d or name.startswith(f"{d}."):
            return d
    return None


def resources(
    spec: TopologySpec,
    objects: BrokerObjects,
    vhost: str,
    users: Sequence[UserDef] = (),
    *,
    cluster: str = "rabbitmq",
    namespace: str | None = None,
) -> list[Resource]:
    """Every resource of the topology, in the order the operator can create them."""
    ref = {"rabbitmqClusterReference": {"name": cluster}}
    prefix = slug(vhost)

    def resource(kind: str, name: str, owner: str | None, body: Resource) -> Resource:
        return {
            "apiVersion": API,
            "kind": kind,
            "metadata": _metadata(f"{prefix}.{slug(name)}", namespace, owner),
            "spec": {**body, **ref},
        }

    out: list[Resource] = [
        {
            "apiVersion": API,
            "kind": "Vhost",
            "metadata": _metadata(prefix, namespace, None),
            "spec": {"name": vhost, "deletionPolicy": "retain", **ref},
        }
    ]
    for p in objects.policies.values():
        body = {
            "name": p.name,
            "vhost": vhost,
            "pattern": p.pattern,
            "applyTo": p.apply_to,
            "priority": p.priority,
            "definition": p.definition,
        }
        out.append(resource("Policy", p.name, _owner(spec, p.name), body))
    for e in objects.exchanges.values():
        body = {
            "name": e.name,
            "vhost": vhost,
            "type": e.type,
            "durable": e.durable,  # the operator's default is false: always written
            "autoDelete": e.auto_delete,
        }
        if e.arguments:
            body["arguments"] = e.arguments
        out.append(resource("Exchange", e.name, _owner(spec, e.name), body))
    for q in objects.queues.values():
        arguments = {k: v for k, v in q.arguments.items() if k != "x-queue-type"}
        body = {
            "name": q.name,
            "vhost": vhost,
            "type": q.queue_type,  # the operator sends it as x-queue-type
            "durable": q.durable,
            "autoDelete": q.auto_delete,
            "deletionPolicy": "retain",
        }
        if arguments:
            body["arguments"] = arguments
        out.append(resource("Queue", q.name, _owner(spec, q.name), body))
    for b in objects.bindings.values():
        body = {
            "vhost": vhost,
            "source": b.source,
            "destination": b.destination,
            "destinationType": b.destination_type,
            "routingKey": b.routing_key,
        }
        if b.arguments:
            body["arguments"] = b.arguments
        out.append(resource("Binding", _binding_name(b), _owner(spec, b.destination), body))
    for u in users:
        out += _user(u, vhost, prefix, namespace, ref)
    return out


def _binding_name(b: BindingDef) -> str:
    # A binding has no name of its own; its identity is all its fields.
    digest = hashlib.sha256(repr(b.key).encode()).hexdigest()[:8]
    return f"{b.source}.to.{b.destination}.{digest}"


def secret_name(user: UserDef) -> str:
    """The Secret a user's credentials come from (keys `username` and `password`)."""
    return f"{slug(user.name)}-credentials"


def _user(
    u: UserDef, vhost: str, prefix: str, namespace: str | None, ref: Resource
) -> list[Resource]:
    meta = _metadata(f"{prefix}.user.{slug(u.name)}", namespace, None)
    meta["annotations"] = {ANNOTATION_USER: u.name}
    user: Resource = {
        "apiVersion": API,
        "kind": "User",
        "metadata": meta,
        "spec": {
            "importCredentialsSecret": {"name": secret_name(u)},
            **({"tags": u.tags.split(",")} if u.tags else {}),
            **ref,
        },
    }
    permission: Resource = {
        "apiVersion": API,
        "kind": "Permission",
        "metadata": {**_metadata(f"{prefix}.permission.{slug(u.name)}", namespace, None)},
        "spec": {
            "vhost": vhost,
            "userReference": {"name": meta["name"]},
            "permissions": {"configure": u.configure, "write": u.write, "read": u.read},
            **ref,
        },
    }
    return [user, permission]


def from_resources(resources_: Iterable[Resource]) -> tuple[BrokerObjects, list[UserDef]]:
    """The broker objects and users that resources declare (what the operator would)."""
    objects, users = BrokerObjects(), []
    permissions: dict[str, Resource] = {}
    user_docs: dict[str, Resource] = {}
    for r in resources_:
        kind, s = r["kind"], r["spec"]
        if kind == "Exchange":
            arguments = s.get("arguments") or {}
            objects.add(ExchangeDef(s["name"], s["type"], arguments, s["durable"], s["autoDelete"]))
        elif kind == "Queue":
            arguments = {"x-queue-type": s["type"], **(s.get("arguments") or {})}
            objects.add(QueueDef(s["name"], arguments, s["durable"], s["autoDelete"]))
        elif kind == "Binding":
            objects.add(
                BindingDef(
                    s["source"],
                    s["destination"],
                    s["destinationType"],
                    s["routingKey"],
                    s.get("arguments") or {},
                )
            )
        elif kind == "Policy":
            objects.add(
                PolicyDef(s["name"], s["pattern"], s["definition"], s["applyTo"], s["priority"])
            )
        elif kind == "User":
            user_docs[r["metadata"]["name"]] = r
        elif kind == "Permission":
            permissions[s["userReference"]["name"]] = s
    for name, doc in user_docs.items():
        p = permissions[name]["permissions"]
        user = doc["metadata"]["annotations"][ANNOTATION_USER]
        users.append(
            UserDef(
                user,
                "",
                ",".join(doc["spec"].get("tags", [])),
                p["configure"],
                p["write"],
                p["read"],
            )
        )
    return objects, users
