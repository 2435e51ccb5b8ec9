"""The demo's proof: what every downstream must hold after the run, read from the stores."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from simulation.skus import behaviour_of


@dataclass
class Truth:
    """What the order service emitted, from its outbox."""

    orders: int = 0
    poisoned: set[str] = field(default_factory=set)
    healthy_events: int = 0  # events of orders that are not poisoned: applied once each
    poisoned_events: int = 0  # events of poisoned orders: dead-lettered, applied nowhere
    reserved_units: int = 0  # over orders that are not poisoned
    points: int = 0  # whole units paid, over orders that are not poisoned
    pairs: int = 0  # co-purchased SKU pairs, over orders that are not poisoned


def read_truth(orders_db: Path) -> Truth:
    """Read the producer's outbox (the source of truth for what must arrive)."""
    truth = Truth()
    with sqlite3.connect(orders_db) as db:
        rows = db.execute("SELECT event_type, order_id, body FROM outbox ORDER BY id").fetchall()
    paid: dict[str, Decimal] = {}
    units: dict[str, int] = {}
    skus: dict[str, int] = {}
    events: Counter[str] = Counter()
    for event_type, order_id, body in rows:
        payload = json.loads(body)["payload"]
        events[order_id] += 1
        if event_type == "order.created":
            truth.orders += 1
            if any(behaviour_of(i["sku"]).poison for i in payload["items"]):
                truth.poisoned.add(order_id)
            units[order_id] = sum(i["qty"] for i in payload["items"])
            skus[order_id] = len({i["sku"] for i in payload["items"]})
        elif event_type == "order.paid":
            paid[order_id] = Decimal(payload["amount"])
    truth.poisoned_events = sum(n for o, n in events.items() if o in truth.poisoned)
    truth.healthy_events = sum(events.values()) - truth.poisoned_events
    truth.reserved_units = sum(u for o, u in units.items() if o not in truth.poisoned)
    truth.points = sum(int(a) for o, a in paid.items() if o not in truth.poisoned)
    truth.pairs = sum(n * (n - 1) // 2 for o, n in skus.items() if o not in truth.poisoned)
    return truth


@dataclass
class Check:
    """One invariant of one downstream."""

    downstream: str
    name: str
    expected: Any
    actual: Any

    @property
    def ok(self) -> bool:
        """Whether the invariant holds."""
        return bool(self.expected == self.actual)


def check_store(
    downstream: str, db: Path, truth: Truth, dead: list[tuple[str, str, str]]
) -> list[Check]:
    """The invariants of one downstream: applied, order, dead letters, and its effects (each
    effect counted from the outbox, so an event applied twice shows)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT event_id, order_id, seq FROM inbox ORDER BY applied_at_us"
        ).fetchall()
        effects = _effects(downstream, conn)
    seqs: dict[str, list[int]] = defaultdict(list)
    for _, order_id, seq in rows:
        seqs[order_id].append(seq)
    out_of_order = sum(1 for s in seqs.values() if s != list(range(1, len(s) + 1)))
    checks = [
        Check(downstream, "applied", truth.healthy_events, len(rows)),
        Check(downstream, "out-of-order orders", 0, out_of_order),
        Check(downstream, "poisoned orders applied", 0, len(truth.poisoned & set(seqs))),
        # Distinct events: a worker killed between its confirmed DLQ publish and its ack
        # dead-letters the redelivery again (at least once: a duplicate, never a loss).
        Check(
            downstream, "dead-lettered events", truth.poisoned_events, len({e for *_, e in dead})
        ),
        Check(
            downstream,
            "dead letters of healthy orders",
            0,
            sum(1 for order_id, *_ in dead if order_id not in truth.poisoned),
        ),
    ]
    if effects is not None:
        checks.append(
            Check(downstream, _EFFECTS[downstream][0], _wanted(downstream, truth), effects)
        )
    return checks


# Each downstream's effect: what it is called and how its store sums it.
_EFFECTS = {
    "inventory": ("units reserved once", "SELECT coalesce(sum(reserved), 0) FROM stock"),
    "loyalty": ("points credited once", "SELECT coalesce(sum(points), 0) FROM points"),
    "recommendations": ("pairs counted once", "SELECT coalesce(sum(count), 0) FROM copurchase"),
    "warehouse": ("one fact per event", "SELECT count(*) FROM facts"),
    "fraud_audit": ("one audit row per event", "SELECT count(*) FROM audit"),
}


def _wanted(downstream: str, truth: Truth) -> int:
    return {
        "inventory": truth.reserved_units,
        "loyalty": truth.points,
        "recommendations": truth.pairs,
    }.get(downstream, truth.healthy_events)


def _effects(downstream: str, conn: sqlite3.Connection) -> int | None:
    if downstream not in _EFFECTS:
        return None  # a downstream of the user's own: its effects are its own to check
    return int(conn.execute(_EFFECTS[downstream][1]).fetchone()[0])
