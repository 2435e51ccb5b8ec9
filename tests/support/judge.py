"""The judge of a whole-bus run: what each downstream's store must hold, computed from the
order service's outbox alone, compared with what the store holds.

It shares no code with what it judges (not the demo's report, not the handlers): it reads
the outbox and the stores with plain SQL and works the effects out itself. Only the poison
marker is imported, from the simulation that plants it.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import combinations
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from simulation.skus import POISON_PREFIX

DeadLetter = tuple[str, str, str]  # order_id, reason, event_id


@dataclass
class Expected:
    """What the outbox says every downstream must end with."""

    events: dict[str, tuple[str, int]] = field(default_factory=dict)  # event_id: order, seq
    poisoned: set[str] = field(default_factory=set)
    reserved: Counter[str] = field(default_factory=Counter)  # sku: units, healthy orders
    points: Counter[str] = field(default_factory=Counter)  # customer: whole units paid
    pairs: Counter[tuple[str, str]] = field(default_factory=Counter)  # co-purchased SKUs

    @property
    def orders(self) -> set[str]:
        """Every order in the outbox."""
        return {o for o, _ in self.events.values()}

    @property
    def healthy(self) -> set[str]:
        """Event ids of the orders that are not poisoned: each applied once everywhere."""
        return {e for e, (o, _) in self.events.items() if o not in self.poisoned}

    @property
    def dead(self) -> set[str]:
        """Event ids of the poisoned orders: each in every DLQ (and applied nowhere)."""
        return set(self.events) - self.healthy


Where = Path | str  # a SQLite file, or a PostgreSQL DSN


@contextmanager
def _connected(where: Where, schema: str | None = None) -> Iterator[Any]:
    """A DB-API connection to a SQLite file, or to PostgreSQL (in a downstream's schema)."""
    if isinstance(where, Path):
        with sqlite3.connect(where) as conn:
            yield conn
        return
    import psycopg  # the postgres extra: only where a store is on PostgreSQL

    dsn = make_url(where).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn:
        if schema:
            conn.execute(f'SET search_path TO "{schema}"')
        yield conn


def expected_from_outbox(db: Where) -> Expected:
    """Read the outbox and work out every downstream's expected state."""
    with _connected(db) as conn:
        rows = conn.execute(
            "SELECT event_id, order_id, seq, event_type, body FROM outbox ORDER BY id"
        ).fetchall()
    out = Expected()
    created: dict[str, dict[str, Any]] = {}
    paid: dict[str, Decimal] = {}
    for event_id, order_id, seq, event_type, body in rows:
        out.events[event_id] = (order_id, seq)
        payload = json.loads(body)["payload"]
        if event_type == "order.created":
            created[order_id] = payload
            if any(i["sku"].startswith(POISON_PREFIX) for i in payload["items"]):
                out.poisoned.add(order_id)
        elif event_type == "order.paid":
            paid[order_id] = Decimal(payload["amount"])
    for order_id, payload in created.items():
        if order_id in out.poisoned:
            continue
        for item in payload["items"]:
            out.reserved[item["sku"]] += item["qty"]
        out.pairs.update(combinations(sorted({i["sku"] for i in payload["items"]}), 2))
        if order_id in paid:
            out.points[payload["customer_id"]] += int(paid[order_id])
    return out


# What each downstream's own tables hold, as the judge reads them.
_EFFECTS = {
    "inventory": "SELECT sku, reserved FROM stock WHERE reserved > 0",
    "loyalty": "SELECT customer_id, points FROM points WHERE points > 0",
    "recommendations": "SELECT sku_a, sku_b, count FROM copurchase",
    "warehouse": "SELECT event_id FROM facts",
    "fraud_audit": "SELECT event_id FROM audit",
}


def _wanted_effects(downstream: str, want: Expected) -> Any:
    if downstream == "inventory":
        return dict(want.reserved)
    if downstream == "loyalty":
        return dict(want.points)
    if downstream == "recommendations":
        return dict(want.pairs)
    return want.healthy  # warehouse facts and audit rows: one per applied event


def _found_effects(downstream: str, conn: Any) -> Any:
    rows = conn.execute(_EFFECTS[downstream]).fetchall()
    if downstream in ("inventory", "loyalty"):
        return {key: value for key, value in rows}
    if downstream == "recommendations":
        return {(a, b): count for a, b, count in rows}
    return {event_id for (event_id,) in rows}


def judge_store(downstream: str, store: Where, want: Expected, dead: list[DeadLetter]) -> list[str]:
    """Every way the downstream's store (a SQLite file, or the PostgreSQL database holding
    its schema) and its DLQ differ from the outbox; [] when they agree."""
    with _connected(store, downstream) as conn:
        inbox = conn.execute(
            "SELECT event_id, order_id, seq FROM inbox ORDER BY applied_at_us"
        ).fetchall()
        effects = _found_effects(downstream, conn)
    wrong = []
    applied = {e for e, _, _ in inbox}
    if applied != want.healthy:
        missing, extra = want.healthy - applied, applied - want.healthy
        wrong.append(f"applied: {len(missing)} missing {sorted(missing)[:5]}, "
                     f"{len(extra)} not due {sorted(extra)[:5]}")  # fmt: skip
    seqs: dict[str, list[int]] = defaultdict(list)
    for _, order_id, seq in inbox:
        seqs[order_id].append(seq)
    disordered = {o: s for o, s in seqs.items() if s != list(range(1, len(s) + 1))}
    if disordered:
        wrong.append(f"applied out of seq order: {dict(list(disordered.items())[:5])}")
    if effects != _wanted_effects(downstream, want):
        wrong.append(f"effects differ from the outbox's: {_difference(effects, want, downstream)}")
    dead_ids = {e for *_, e in dead}
    if dead_ids != want.dead:
        wrong.append(
            f"dead letters: {len(want.dead - dead_ids)} poisoned events missing, "
            f"{len(dead_ids - want.dead)} of healthy orders"
        )
    return [f"{downstream}: {w}" for w in wrong]


def _difference(found: Any, want: Expected, downstream: str) -> str:
    wanted = _wanted_effects(downstream, want)
    if isinstance(found, set):
        return f"{len(wanted - found)} missing, {len(found - wanted)} extra"
    keys = sorted(set(found) | set(wanted), key=str)
    diff = [(k, wanted.get(k), found.get(k)) for k in keys if wanted.get(k) != found.get(k)]
    return f"{len(diff)} keys (key, expected, found): {diff[:5]}"
