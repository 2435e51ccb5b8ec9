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
    # A field's docstring is its description in the file's JSON Schema (editors show it).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


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

    group_size: Annotated[int | None, Field(ge=1, le=MAX_REPLICAS)] = 3
    """Raft members per queue (null: every node); a majority must be up for the queue to
    work. Capped by the nodes: on one node every queue has one member."""
    leader_locator: LeaderLocator = LeaderLocator.BALANCED
    """Where a new queue's leader goes: `balanced` (the node leading fewest) or
    `client-local` (the node that declared it)."""


class ExchangeSpec(_Spec):
    """The topic exchange the order service publishes to."""

    name: ObjectName = "orders"
    """The topic exchange's name; the routing key is the event type."""
    alternate_exchange: ObjectName = "orders.unroutable"
    """Where an event no binding takes goes (a fanout exchange and a queue of that name)."""


class LogSpec(_Spec):
    """The replayable stream of every event."""

    name: ObjectName = "orders.log"
    """The stream's name."""
    # Not "#": a catch-all binding would make every key routable and the alternate
    # exchange would never see a message.
    routing_keys: Annotated[list[RoutingKey], Field(min_length=1)] = ["order.#"]
    """The topic keys the stream keeps (not `#`: the alternate exchange would see nothing)."""
    max_age: Annotated[DurationMs, Field(ge=1000)] = 7 * 86_400_000
    """How long the stream keeps an event (a live policy): the reach of `replay`."""
    max_length_bytes: SizeBytes = 10**9
    """The stream's size cap (a live policy); the oldest segments go first."""
    max_segment_size_bytes: SizeBytes = 100 * 10**6
    """The size of one segment file of the stream (fixed when the stream is created)."""


class RetrySpec(_Spec):
    """Retry tiers (name -> delay, in order of use) and the attempt budget."""

    tiers: Annotated[dict[TierName, DurationMs], Field(min_length=1, max_length=10)] = {
        "short": 1000,
        "medium": 10_000,
        "long": 60_000,
    }
    """Retry tiers, name: delay, in the order failures climb them (the last repeats); each is
    a queue `<d>.retry.<name>` where a retried event waits until the workers' forwarder
    brings it back when due (a delay change takes effect as workers restart)."""
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 5
    """Handler failures before an event goes to the DLQ as retries-exhausted (parking its
    order)."""
    # x the first tier: how long a later event waits (in the store's waiting table) for its
    # predecessor, which may itself be in a retry tier or on its way back from one.
    max_deferrals: Annotated[int, Field(ge=0, le=10_000)] = 300
    """How long an event waits for a missing predecessor, in multiples of the first tier's
    delay (it waits in the downstream's store, table `waiting`), before it goes to the DLQ as
    predecessor-missing (parking its order)."""

    @model_validator(mode="after")
    def _delays_positive(self) -> RetrySpec:
        for name, delay in self.tiers.items():
            if delay <= 0:
                raise ValueError(f"tier {name!r}: the delay must be more than 0")
        return self


class BatchSpec(_Spec):
    """Batching of deliveries into one handler call and one transaction."""

    size: Annotated[int, Field(ge=1, le=10_000)]
    """Events per handler call and transaction, at most."""
    linger: DurationMs
    """How long a batch waits to fill before it goes as it is."""


class DownstreamSpec(_Spec):
    """One downstream: its shards, consumption settings, retries and limits."""

    routing_keys: Annotated[list[RoutingKey], Field(min_length=1)] = ["order.#"]
    """The topic keys of the events it takes (`order.#`: all of them)."""
    shards: Annotated[int, Field(ge=1, le=MAX_SHARDS)] = 4
    """Shard queues `<d>.0` … `<d>.<n-1>`: the most processes that consume it at once.
    Changes live (`apply` grows by appending, shrinks by draining the newest)."""
    queue_type: QueueType = QueueType.QUORUM
    """`quorum` (replicated, the default) or `classic` (one node's copy)."""
    prefetch: Annotated[int, Field(ge=1, le=65_535)] = 200
    """Unacked deliveries a shard's consumer holds: the backpressure bound."""
    concurrency: Annotated[int, Field(ge=1, le=10_000)] = 64
    """Orders a process applies at once (one order's events always one after another)."""
    semantics: Semantics = Semantics.AT_LEAST_ONCE
    """`at-least-once` (ack after the effect commits) or `at-most-once` (ack on receipt: a
    crash may drop an event)."""
    retry: RetrySpec = RetrySpec()
    """Its retry tiers and budgets."""
    delivery_limit: Annotated[int | None, Field(ge=1)] = 20
    """Returns of one message the broker allows (a worker dying while it holds one counts);
    the next dead-letters it, so it is delivered at most this + 1 times (a live policy;
    quorum only; null: none). Catches a message that crashes the worker every time."""
    max_length: Annotated[int | None, Field(ge=1)] = 1_000_000
    """Messages a shard holds at most before `overflow` applies (a live policy; null: no
    cap)."""
    overflow: Literal["reject-publish", "drop-head"] = "reject-publish"
    """At max_length: `reject-publish` (the relay is nacked and backs off; nothing is lost)
    or `drop-head` (the oldest is dead-lettered)."""
    # The downstream's handler, `package.module:Class` (default: the entry point registered
    # under its name, else none: events are recorded as applied and nothing else).
    handler: Annotated[
        str | None, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")
    ] = None
    """Its handler, `package.module:Class` (null: the one registered under the entry point
    group `order_event_bus.handlers` by its name, else none: events are only recorded)."""
    handler_time: DurationMs = 0
    """Simulated time per event, or per batch when it batches (only under `python -m
    simulation workers`; the bus itself never sleeps)."""
    # A handler call (per event, or per batch's load) that runs longer fails as retryable:
    # a hung call would otherwise hold its delivery, its order's lane and prefetch for ever.
    handler_timeout: Annotated[DurationMs, Field(ge=1)] = 30_000
    """A handler call (an event's check, a batch's load) that runs longer is cut and retried
    like any transient failure."""
    batch: BatchSpec | None = None
    """Batch events into one handler call and one transaction (null: one event a call)."""
    latency_objective: Annotated[DurationMs, Field(ge=1)] = 60_000
    """The p99 of end-to-end latency (applied minus occurred_at) above which the alert
    BusLatencyHigh fires after 10 minutes."""
    scale_out_lag: Annotated[int, Field(ge=1)] = 10_000
    """Lag in messages past which the workers recommend another process
    (`bus_worker_scale_out_recommended`)."""
    replication: ReplicationSpec | None = None
    """Its own replication settings (null: the file's top-level `replication`)."""

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
    """The `app_id` property of every published event."""
    window: Annotated[int, Field(ge=1, le=10_000)] = 256
    """Publishes awaiting their confirm at once."""
    poll_interval: Annotated[DurationMs, Field(ge=1)] = 50
    """How long the relay waits before reading an empty outbox again."""


class AccessSpec(_Spec):
    """Users per role; each password comes from $<password_env_prefix><USER> at apply time."""

    producer_user: ObjectName = "order-service"
    """The order service's user: writes to the orders exchange only."""
    worker_user_prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_.-]{0,40}$")] = "worker-"
    """Workers' users are this prefix and the downstream's name: each reads its own shards
    and DLQ and writes its own retry and dead exchanges."""
    operator_user: ObjectName = "bus-operator"
    """The operator tools' user (administrator)."""
    password_env_prefix: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,40}$")] = "BUS_PASSWORD_"
    """Each user's password is read from this prefix and its name, upper-cased, `-` and `.`
    as `_` (e.g. BUS_PASSWORD_WORKER_INVENTORY), never from the file."""


class TopologySpec(_Spec):
    """The whole topology file."""

    version: Literal[1] = 1
    """The file format's version."""
    exchange: ExchangeSpec = ExchangeSpec()
    """The exchange the relay publishes to."""
    log: LogSpec = LogSpec()
    """The stream every event is kept in, for `replay`."""
    producer: ProducerSpec = ProducerSpec()
    """The relay's settings."""
    replication: ReplicationSpec = ReplicationSpec()
    """Replication of every quorum queue and the stream on a cluster."""
    access: AccessSpec | None = None
    """Least-privilege users `apply` creates (null: none)."""
    downstreams: Annotated[dict[DownstreamName, DownstreamSpec], Field(min_length=1)]
    """Each downstream by name: its own exchange, shards, retry tiers and DLQ."""

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
