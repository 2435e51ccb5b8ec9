"""The topology file's model: validated before anything touches the broker."""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from topology.units import parse_duration_ms, parse_size_bytes

DEFAULT_TOPOLOGY_FILE = Path(__file__).with_name("orders.yaml")
MAX_SHARDS = 64
MAX_REPLICAS = 9

# What a file may write, for the file's JSON Schema (python -m topology schema).
DURATION_JSON = {"type": "string", "pattern": r"^\s*\d+\s*(ms|s|m|h|d)\s*$"}
SIZE_JSON = {
    "anyOf": [
        {"type": "integer", "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^\s*\d+\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$"},
    ]
}
# A duration is milliseconds in the model and "250ms", "10s" in the file (and its schema).
DurationMs = Annotated[
    int, BeforeValidator(parse_duration_ms), Field(ge=0), WithJsonSchema(DURATION_JSON)
]
SizeBytes = Annotated[
    int, BeforeValidator(parse_size_bytes), Field(gt=0), WithJsonSchema(SIZE_JSON)
]
DownstreamName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
TierName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,19}$")]
ObjectName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,99}$")]
_TOPIC_WORD = re.compile(r"^(\*|#|[A-Za-z0-9_-]+)$")


def _routing_key(value: str) -> str:
    if not value or not all(_TOPIC_WORD.match(w) for w in value.split(".")):
        raise ValueError(f"{value!r} is not a topic binding key (dot-separated words, * or #)")
    return value


RoutingKey = Annotated[str, BeforeValidator(lambda v: _routing_key(v) if isinstance(v, str) else v)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Semantics(StrEnum):
    """When a worker acks: after the effect commits, or before it runs (droppable)."""

    AT_LEAST_ONCE = "at-least-once"
    AT_MOST_ONCE = "at-most-once"


class QueueType(StrEnum):
    """Queue types a downstream's queues may have."""

    QUORUM = "quorum"
    CLASSIC = "classic"


class LeaderLocator(StrEnum):
    """Where a new quorum queue or stream puts its leader."""

    BALANCED = "balanced"  # the node with the fewest leaders
    CLIENT_LOCAL = "client-local"  # the node that received the declaration


class ReplicationSpec(_Spec):
    """How quorum queues and the stream replicate over a cluster's nodes (creation-time:
    a queue keeps the members it was created with until `rabbitmq-queues grow/shrink`)."""

    # Raft members per queue (None: every node); a majority of them must be up. Capped by the
    # nodes in the cluster: on one node every queue has one member whatever this says.
    group_size: Annotated[int | None, Field(ge=1, le=MAX_REPLICAS)] = 3
    leader_locator: LeaderLocator = LeaderLocator.BALANCED


class ExchangeSpec(_Spec):
    """The topic exchange the order service publishes to."""

    name: ObjectName = "orders"
    alternate_exchange: ObjectName = "orders.unroutable"


class LogSpec(_Spec):
    """The replayable stream of every event."""

    name: ObjectName = "orders.log"
    # Not "#": a catch-all binding would make every key routable and the alternate
    # exchange would never see a message.
    routing_keys: Annotated[list[RoutingKey], Field(min_length=1)] = ["order.#"]
    max_age: Annotated[DurationMs, Field(ge=1000)] = 7 * 86_400_000
    max_length_bytes: SizeBytes = 10**9
    max_segment_size_bytes: SizeBytes = 100 * 10**6


class RetrySpec(_Spec):
    """Retry tiers (name -> delay, in order of use) and the attempt budget."""

    tiers: Annotated[dict[TierName, DurationMs], Field(min_length=1, max_length=10)] = {
        "short": 1000,
        "medium": 10_000,
        "long": 60_000,
    }
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    # x the first tier: how long a later event waits for its predecessor. It must outlast
    # the broker's dead-letter re-send delay after a restart (stock 180 s; see rabbitmq/).
    max_deferrals: Annotated[int, Field(ge=0, le=10_000)] = 300

    @model_validator(mode="after")
    def _delays_positive(self) -> RetrySpec:
        for name, delay in self.tiers.items():
            if delay <= 0:
                raise ValueError(f"tier {name!r}: the delay must be more than 0")
        return self


class BatchSpec(_Spec):
    """Batching of deliveries into one handler call and one transaction."""

    size: Annotated[int, Field(ge=1, le=10_000)]
    linger: DurationMs


class DownstreamSpec(_Spec):
    """One downstream: its shards, consumption settings, retries and limits."""

    routing_keys: Annotated[list[RoutingKey], Field(min_length=1)] = ["order.#"]
    shards: Annotated[int, Field(ge=1, le=MAX_SHARDS)] = 4
    queue_type: QueueType = QueueType.QUORUM
    prefetch: Annotated[int, Field(ge=1, le=65_535)] = 200
    concurrency: Annotated[int, Field(ge=1, le=10_000)] = 64
    semantics: Semantics = Semantics.AT_LEAST_ONCE
    retry: RetrySpec = RetrySpec()
    delivery_limit: Annotated[int | None, Field(ge=1)] = 20
    max_length: Annotated[int | None, Field(ge=1)] = 1_000_000
    overflow: Literal["reject-publish", "drop-head"] = "reject-publish"
    # The downstream's handler, `package.module:Class` (default: the entry point registered
    # under its name, else none: events are recorded as applied and nothing else).
    handler: Annotated[
        str | None, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")
    ] = None
    handler_time: DurationMs = (
        0  # simulated time per event (only under `python -m simulation workers`)
    )
    # A handler call (per event, or per batch's load) that runs longer fails as retryable:
    # a hung call would otherwise hold its delivery, its order's lane and prefetch for ever.
    handler_timeout: Annotated[DurationMs, Field(ge=1)] = 30_000
    batch: BatchSpec | None = None
    scale_out_lag: Annotated[int, Field(ge=1)] = 10_000
    replication: ReplicationSpec | None = None  # None: the file's top-level replication

    @model_validator(mode="after")
    def _quorum_only_settings(self) -> DownstreamSpec:
        if self.queue_type is QueueType.CLASSIC and self.delivery_limit is not None:
            raise ValueError("delivery_limit needs queue_type quorum (set it to null for classic)")
        if self.queue_type is QueueType.CLASSIC and self.replication is not None:
            raise ValueError("replication needs queue_type quorum (classic queues have one copy)")
        return self


class ProducerSpec(_Spec):
    """The order service's relay."""

    app_id: Annotated[str, Field(min_length=1, max_length=64)] = "order-service"
    window: Annotated[int, Field(ge=1, le=10_000)] = 256
    poll_interval: Annotated[DurationMs, Field(ge=1)] = 50


class AccessSpec(_Spec):
    """Users per role; each password comes from $<password_env_prefix><USER> at apply time."""

    producer_user: ObjectName = "order-service"
    worker_user_prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,40}$")] = "worker-"
    operator_user: ObjectName = "bus-operator"
    password_env_prefix: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,40}$")] = "BUS_PASSWORD_"


class TopologySpec(_Spec):
    """The whole topology file."""

    version: Literal[1] = 1
    exchange: ExchangeSpec = ExchangeSpec()
    log: LogSpec = LogSpec()
    producer: ProducerSpec = ProducerSpec()
    replication: ReplicationSpec = ReplicationSpec()
    access: AccessSpec | None = None
    downstreams: Annotated[dict[DownstreamName, DownstreamSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _names_do_not_collide(self) -> TopologySpec:
        taken = {self.exchange.name, self.exchange.alternate_exchange, self.log.name}
        if len(taken) != 3:
            raise ValueError("exchange.name, exchange.alternate_exchange and log.name must differ")
        for name in self.downstreams:
            if any(t == name or t.startswith(name + ".") for t in taken):
                raise ValueError(f"downstream {name!r} collides with a name in exchange/log")
        return self

    def downstream(self, name: str) -> DownstreamSpec:
        """One downstream's section, or UnknownDownstream naming those the file declares."""
        if name not in self.downstreams:
            raise UnknownDownstream(
                f"unknown downstream {name!r}; the file declares: {', '.join(self.downstreams)}"
            )
        return self.downstreams[name]

    def replication_of(self, name: str) -> ReplicationSpec:
        """A downstream's replication: its own section, else the file's."""
        return self.downstream(name).replication or self.replication

    def choose(self, requested: Sequence[str]) -> list[str]:
        """Resolve 'all' (or nothing) or a list of downstream names against the file."""
        if not requested or list(requested) == ["all"]:
            return list(self.downstreams)
        unknown = [n for n in requested if n not in self.downstreams]
        if unknown:
            raise UnknownDownstream(
                f"unknown downstream(s) {', '.join(unknown)}; the file declares: "
                f"{', '.join(self.downstreams)} (or 'all')"
            )
        return list(dict.fromkeys(requested))


class UnknownDownstream(ValueError):
    """A downstream name the topology file does not declare."""


class TopologyFileError(Exception):
    """A topology file that cannot be read or is invalid; names file, field and reason."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))

    def render(self) -> str:
        """Multi-line message for a terminal."""
        lines = [f"invalid topology file {self.path}:"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def load_spec(path: Path | None = None) -> TopologySpec:
    """Read and validate a topology file (default: the packaged one), or raise TopologyFileError."""
    path = path or DEFAULT_TOPOLOGY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyFileError(path, [f"cannot read the file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise TopologyFileError(path, ["the file is not UTF-8 text"]) from None
    return parse_spec(text, path)


def parse_spec(text: str, path: Path = Path("<string>")) -> TopologySpec:
    """Validate topology YAML text, or raise TopologyFileError."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise TopologyFileError(path, [f"{where}not valid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise TopologyFileError(path, ["the top level must be a mapping with 'downstreams'"])
    try:
        return TopologySpec.model_validate(data)
    except ValidationError as exc:
        raise TopologyFileError(path, [_describe(e) for e in exc.errors()]) from None


def _describe(error: Any) -> str:
    loc = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
    msg = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        msg = "unknown field"
    return f"{loc or '<top>'}: {msg}"
