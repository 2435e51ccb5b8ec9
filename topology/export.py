"""Export compiled objects as RabbitMQ definitions JSON (for `rabbitmqctl import_definitions`)."""

from __future__ import annotations

from typing import Any

from broker.objects import BrokerObjects


def definitions(objects: BrokerObjects, vhost: str) -> dict[str, Any]:
    """Return a definitions document for one vhost, in the broker's import format."""
    return {
        "vhosts": [{"name": vhost}],
        "exchanges": [
            {"name": e.name, "vhost": vhost, **e.settings()} for e in objects.exchanges.values()
        ],
        "queues": [
            {"name": q.name, "vhost": vhost, **q.settings()} for q in objects.queues.values()
        ],
        "bindings": [
            {
                "source": b.source,
                "vhost": vhost,
                "destination": b.destination,
                "destination_type": b.destination_type,
                **b.settings(),
            }
            for b in objects.bindings.values()
        ],
        "policies": [
            {"name": p.name, "vhost": vhost, **p.settings()} for p in objects.policies.values()
        ],
    }
