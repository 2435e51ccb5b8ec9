"""Export compiled objects as RabbitMQ definitions JSON (for `rabbitmqctl import_definitions`)."""

from __future__ import annotations

from typing import Any

from topology.model import BrokerObjects


def definitions(objects: BrokerObjects, vhost: str) -> dict[str, Any]:
    """Return a definitions document for one vhost, in the broker's import format."""
    return {
        "vhosts": [{"name": vhost}],
        "exchanges": [
            {
                "name": e.name,
                "vhost": vhost,
                "type": e.type,
                "durable": e.durable,
                "auto_delete": e.auto_delete,
                "internal": e.internal,
                "arguments": e.arguments,
            }
            for e in objects.exchanges.values()
        ],
        "queues": [
            {
                "name": q.name,
                "vhost": vhost,
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "arguments": q.arguments,
            }
            for q in objects.queues.values()
        ],
        "bindings": [
            {
                "source": b.source,
                "vhost": vhost,
                "destination": b.destination,
                "destination_type": b.destination_type,
                "routing_key": b.routing_key,
                "arguments": b.arguments,
            }
            for b in objects.bindings.values()
        ],
        "policies": [
            {
                "name": p.name,
                "vhost": vhost,
                "pattern": p.pattern,
                "apply-to": p.apply_to,
                "definition": p.definition,
                "priority": p.priority,
            }
            for p in objects.policies.values()
        ],
    }
