"""The concrete broker objects a topology compiles to, and the live state read back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class ExchangeDef:
    """An exchange as the broker knows it."""

    name: str
    type: str
    arguments: JsonDict = field(default_factory=dict)
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False

    def settings(self) -> JsonDict:
        """Its settings as the management API and definitions files spell them."""
        keys = ("type", "durable", "auto_delete", "internal", "arguments")
        return {k: getattr(self, k) for k in keys}


@dataclass(frozen=True)
class QueueDef:
    """A queue with its immutable arguments (mutable settings live in policies)."""

    name: str
    arguments: JsonDict = field(default_factory=dict)
    durable: bool = True
    auto_delete: bool = False

    def settings(self) -> JsonDict:
        """Its settings as the management API and definitions files spell them."""
        return {
            "durable": self.durable,
            "auto_delete": self.auto_delete,
            "arguments": self.arguments,
        }

    @property
    def queue_type(self) -> str:
        """The x-queue-type argument ('classic' when absent)."""
        return str(self.arguments.get("x-queue-type", "classic"))


@dataclass(frozen=True)
class BindingDef:
    """A binding from an exchange to a queue or an exchange."""

    source: str
    destination: str
    destination_type: str  # "queue" | "exchange"
    routing_key: str
    arguments: JsonDict = field(default_factory=dict)

    def settings(self) -> JsonDict:
        """Its settings as the management API and definitions files spell them."""
        return {"routing_key": self.routing_key, "arguments": self.arguments}

    @property
    def key(self) -> tuple[str, str, str, str, tuple[tuple[str, str], ...]]:
        """Identity of the binding (bindings have no other settings)."""
        args = tuple(sorted((k, repr(v)) for k, v in self.arguments.items()))
        return (self.source, self.destination_type, self.destination, self.routing_key, args)


@dataclass(frozen=True)
class PolicyDef:
    """A policy carrying the settings that may change live."""

    name: str
    pattern: str
    definition: JsonDict
    apply_to: str = "queues"
    priority: int = 10

    def settings(self) -> JsonDict:
        """Its settings as the management API and definitions files spell them."""
        return {
            "pattern": self.pattern,
            "definition": self.definition,
            "apply-to": self.apply_to,
            "priority": self.priority,
        }


_TABLES = {
    ExchangeDef: "exchanges",
    QueueDef: "queues",
    BindingDef: "bindings",
    PolicyDef: "policies",
}


@dataclass
class BrokerObjects:
    """Exchanges, queues, bindings and policies of one vhost (desired or live)."""

    exchanges: dict[str, ExchangeDef] = field(default_factory=dict)
    queues: dict[str, QueueDef] = field(default_factory=dict)
    bindings: dict[tuple[Any, ...], BindingDef] = field(default_factory=dict)
    policies: dict[str, PolicyDef] = field(default_factory=dict)

    def add(self, obj: ExchangeDef | QueueDef | BindingDef | PolicyDef) -> None:
        """Add one object, refusing a second object of the same kind and name."""
        table: dict[Any, Any] = getattr(self, _TABLES[type(obj)])
        key = obj.key if isinstance(obj, BindingDef) else obj.name
        if key in table:
            raise ValueError(f"two {type(obj).__name__} objects named {key!r}")
        table[key] = obj
