"""Waiting for a run of the whole bus to settle, and reading what it left behind: applied
events per store, dead letters per DLQ, the outbox, and the stream."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.connect import connect
from broker.management import ManagementClient
from broker.queues import queue_depth
from operations.dlq import DeadLetters
from tests.support.amqp import collect_ids
from tests.support.judge import Expected, judge_store
from tests.support.polling import InvariantBroken, eventually
from tests.support.workers import files_in_order
from topology import names as n
from topology.spec import TopologySpec

# Longer than the broker's dead-letter re-send delay (10 s): a bus still for this long with
# every queue but the DLQs empty has nothing more coming.
STILL_SECONDS = 25.0
DeadLetter = tuple[str, str, str]  # order_id, reason, event_id


def applied(store: Path) -> int:
    """Events a downstream's SQLite store has applied (its inbox rows)."""
    try:
        with sqlite3.connect(store) as db:
            return int(db.execute("SELECT count(*) FROM inbox").fetchone()[0])
    except sqlite3.Error:
        return 0


def outbox_ids(db: Path) -> set[str]:
    """Every event the order service wrote to its SQLite outbox."""
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute("SELECT event_id FROM outbox")}


def unsent(db: Path) -> int:
    """Outbox rows the relay has not marked sent."""
    with sqlite3.connect(db) as conn:
        return int(
            conn.execute("SELECT count(*) FROM outbox WHERE sent_at_ms IS NULL").fetchone()[0]
        )


async def dead_letters(amqp_url: str, downstreams: list[str]) -> dict[str, list[DeadLetter]]:
    """Each downstream's DLQ, read without consuming it."""
    dead = {}
    for d in downstreams:
        async with DeadLetters(amqp_url, d) as letters:
            assert letters.complete, letters.shortfall
            dead[d] = [(m.order_id, m.reason, m.event_id) for m in letters.messages]
    return dead


async def in_stream(amqp_url: str, log: str, expected: set[str]) -> bool:
    """Whether every expected event id is in the stream."""
    connection = await connect(amqp_url, "test:stream")
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        seen = await collect_ids(channel, log, expected, arguments={"x-stream-offset": "first"})
    return expected <= seen.keys()


async def settle(
    amqp_url: str,
    management: ManagementClient,
    vhost: str,
    stores: Path,
    spec: TopologySpec,
    expected: tuple[int, int],
    within: float,
    outbox: Path,
    alive: Callable[[], None] = lambda: None,
    label: str = "",
) -> None:
    """Wait until every downstream has applied or dead-lettered every event (expected:
    applied, dead per downstream) and nothing is left in flight, or until nothing has moved
    for STILL_SECONDS with every queue but the DLQs empty (then the caller's checks judge).
    `alive` raises when a process the run needs has died."""
    queues = [
        *(n.shard(d, i) for d, ds in spec.downstreams.items() for i in range(ds.shards)),
        *(n.retry_queue(d, t) for d, ds in spec.downstreams.items() for t in ds.retry.tiers),
    ]
    connection = await connect(amqp_url, "test:settle")
    async with connection:
        state: dict[str, Any] = {"last": None, "since": time.monotonic(), "seen": None}

        async def depth(queue: str) -> int:
            channel = await connection.channel()
            try:
                return await queue_depth(channel, queue)
            finally:
                await channel.close()

        async def distinct_dead(d: str) -> int:
            async with DeadLetters(amqp_url, d) as letters:
                return len({m.event_id for m in letters.messages})

        async def settled() -> bool:
            alive()
            seen = {
                d: (applied(stores / f"{d}.db"), await depth(n.dlq(d))) for d in spec.downstreams
            }
            state["seen"] = seen
            # Dead letters may be duplicated by a crash; applied events never are (the inbox).
            if all(a >= expected[0] and dead >= expected[1] for a, dead in seen.values()):
                return all([await distinct_dead(d) >= expected[1] for d in spec.downstreams])
            if seen != state["last"]:
                state["last"], state["since"] = seen, time.monotonic()
                return False
            if time.monotonic() - state["since"] <= STILL_SECONDS:
                return False
            return not any([await depth(q) for q in queues])

        try:
            # An event applied out of order fails the run when it is seen, not at the end.
            in_order = files_in_order(*(stores / f"{d}.db" for d in spec.downstreams))
            await eventually(
                settled, within=within, every=0.5, what="the bus settled", always=in_order
            )
            return
        except InvariantBroken:
            raise
        except AssertionError:
            pass
    waiting = {q["name"]: q.get("messages") for q in management.list_objects("queues", vhost)}
    raise AssertionError(
        f"the bus did not settle{label}: expected (applied, dead) {expected} per downstream, "
        f"got {state['seen']}; outbox unsent {unsent(outbox)}; queues {waiting}"
    )


def print_trail(
    logs: Path,
    stores: Path,
    db: Path,
    names: list[str],
    dead: dict[str, list[DeadLetter]],
    poisoned: set[str] | None = None,
) -> None:
    """For each event neither applied nor dead-lettered (and, given the poisoned orders, each
    healthy order dead-lettered), print every log line of every process that names it."""
    with sqlite3.connect(db) as conn:
        outbox = {
            e: (o, s) for e, o, s in conn.execute("SELECT event_id, order_id, seq FROM outbox")
        }
    orders: set[str] = set()
    for d in names:
        with sqlite3.connect(stores / f"{d}.db") as conn:
            done = {row[0] for row in conn.execute("SELECT event_id FROM inbox")}
        gone = set(outbox) - done - {e for *_, e in dead[d]}
        print(f"{d}: neither applied nor dead-lettered: {[(e, *outbox[e]) for e in gone]}")
        orders |= {outbox[e][0] for e in gone}
        if poisoned is not None:
            wrong = [(o, reason) for o, reason, _ in dead[d] if o not in poisoned]
            print(f"{d}: dead letters of healthy orders (order, reason): {wrong}")
            orders |= {o for o, _ in wrong}
    ids = orders | {e for e, (o, _) in outbox.items() if o in orders}
    for log_file in sorted(logs.glob("*.log")):
        for line in log_file.read_text(errors="replace").splitlines():
            if any(i in line for i in ids):
                print(f"{log_file.name}: {line}")


def store_failures(
    downstreams: list[str],
    stores: Path,
    want: Expected,
    dead: dict[str, list[DeadLetter]],
    logs: Path,
    outbox: Path,
) -> list[str]:
    """Every store check that failed (applied once, in order, effects exact, only poison
    dead-lettered), as lines; when any did, the trail of the orders concerned is printed."""
    failed = [
        line for d in downstreams for line in judge_store(d, stores / f"{d}.db", want, dead[d])
    ]
    if failed:
        print_trail(logs, stores, outbox, downstreams, dead, want.poisoned)
    return failed
