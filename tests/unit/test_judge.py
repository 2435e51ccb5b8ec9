"""The whole-bus tests' judge catches what it is there for: an effect applied twice, an event
missing, events out of order, a healthy order dead-lettered. It reads hand-made SQLite files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.support.judge import Expected, expected_from_outbox, judge_store

ITEMS = {
    "o-1": [("SKU-A", 2), ("SKU-B", 1)],
    "o-2": [("SKU-A", 1)],
    "o-3": [("POISON-X", 1)],
}


def _outbox(path: Path) -> Expected:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE outbox (id INTEGER, event_id, order_id, seq, event_type, body)")
        n = 0
        for order_id, items in ITEMS.items():
            created = {
                "customer_id": f"c-{order_id}",
                "items": [{"sku": s, "qty": q} for s, q in items],
            }
            for seq, (kind, payload) in enumerate(
                [("order.created", created), ("order.paid", {"amount": "10.50"})], start=1
            ):
                n += 1
                body = json.dumps({"payload": payload})
                db.execute("INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?)",
                           (n, f"{order_id}-{seq}", order_id, seq, kind, body))  # fmt: skip
    return expected_from_outbox(path)


def _store(path: Path, want: Expected, inbox: list[tuple[str, str, int]]) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE inbox (event_id, order_id, seq, applied_at_us)")
        db.executemany("INSERT INTO inbox VALUES (?, ?, ?, ?)",
                       [(*row, i) for i, row in enumerate(inbox)])  # fmt: skip
        db.execute("CREATE TABLE stock (sku, reserved)")
        db.executemany("INSERT INTO stock VALUES (?, ?)", want.reserved.items())


@pytest.fixture
def want(tmp_path: Path) -> Expected:
    return _outbox(tmp_path / "orders.db")


def _healthy_inbox() -> list[tuple[str, str, int]]:
    return [(f"{o}-{s}", o, s) for o in ("o-1", "o-2") for s in (1, 2)]


def test_the_outbox_gives_the_effects(want: Expected) -> None:
    assert want.poisoned == {"o-3"}
    assert dict(want.reserved) == {"SKU-A": 3, "SKU-B": 1}
    assert dict(want.points) == {"c-o-1": 10, "c-o-2": 10}
    assert dict(want.pairs) == {("SKU-A", "SKU-B"): 1}
    assert want.dead == {"o-3-1", "o-3-2"} and len(want.healthy) == 4


def test_a_store_that_matches_passes(want: Expected, tmp_path: Path) -> None:
    _store(tmp_path / "inventory.db", want, _healthy_inbox())
    dead = [("o-3", "non-retryable", "o-3-1"), ("o-3", "blocked-by-predecessor", "o-3-2")]
    assert judge_store("inventory", tmp_path / "inventory.db", want, dead) == []


def test_every_defect_is_named(want: Expected, tmp_path: Path) -> None:
    inbox = _healthy_inbox()[:3]  # o-2's paid event missing
    inbox[0], inbox[1] = inbox[1], inbox[0]  # o-1 applied 2 before 1
    _store(tmp_path / "inventory.db", want, inbox)
    with sqlite3.connect(tmp_path / "inventory.db") as db:  # SKU-A reserved a second time
        db.execute("UPDATE stock SET reserved = reserved + 2 WHERE sku = 'SKU-A'")
    dead = [("o-3", "non-retryable", "o-3-1"), ("o-1", "retries-exhausted", "o-1-9")]
    found = " | ".join(judge_store("inventory", tmp_path / "inventory.db", want, dead))
    assert "1 missing" in found and "out of seq order" in found
    assert "('SKU-A', 3, 5)" in found
    assert "1 poisoned events missing, 1 of healthy orders" in found
