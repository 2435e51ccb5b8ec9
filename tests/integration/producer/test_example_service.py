"""The example order service of docs/producers.md, end to end against the real broker, on
SQLite and on PostgreSQL: the guide's commands run as written, with the five downstreams
consuming; every event reaches every downstream once and in order; a rolled-back business
transaction emits nothing; 20 concurrent writers of one order leave exactly seqs 1, 2, 3."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from events import PaymentMethod
from events.models import LineItem
from producer.api import IllegalTransition
from producer.db import outbox
from tests.support import topologies
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.producer import postgres_database
from workers.process.launch import worker_command, worker_env

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "order_service"
GUIDE = ROOT / "docs" / "producers.md"
ORDERS = 20  # what the guide's `python shop.py --orders 20` makes


def _guide_commands() -> list[str]:
    """The bash block of the guide's "A complete example", line by line."""
    section = GUIDE.read_text().split("## A complete example", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "docs/producers.md has no commands for its example"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def _shop() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shop", EXAMPLE / "shop.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def _database(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}"
    else:
        async with postgres_database() as dsn:
            yield dsn


def _run_guide(dsn: str, env: dict[str, str], work: Path) -> list[subprocess.Popen[bytes]]:
    """Run the guide's commands as written (SHOP_DSN pointed at this test's database);
    return what they left running in the background."""
    cwd, env, background = ROOT, {**env, "SHOP_DSN": dsn}, []
    for line in _guide_commands():
        words = shlex.split(line.replace('"$SHOP_DSN"', shlex.quote(dsn)))
        if words[0] == "cd":
            cwd = cwd / words[1]
            continue
        if words[0] == "export":
            continue  # SHOP_DSN: this test's database
        if words[0] == "alembic":
            words[0:1] = [sys.executable, "-m", "alembic"]
        elif words[0] == "python":
            words[0] = sys.executable
        if words[-1] == "&":
            log = (work / f"{words[2]}.log").open("wb")
            background.append(subprocess.Popen(words[:-1], cwd=cwd, env=env, stderr=log))
            continue
        done = subprocess.run(words, cwd=cwd, env=env, capture_output=True, timeout=300)
        assert done.returncode == 0, f"`{line}` failed: {done.stderr.decode()[-2000:]}"
    return background


def _inbox(store: Path) -> dict[str, list[int]]:
    if not store.exists():
        return {}
    with sqlite3.connect(store) as db:
        try:
            rows = db.execute("SELECT order_id, seq FROM inbox ORDER BY applied_at_us").fetchall()
        except sqlite3.OperationalError:
            return {}
    seqs: dict[str, list[int]] = {}
    for order_id, seq in rows:
        seqs.setdefault(order_id, []).append(seq)
    return seqs


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_the_example_service_reaches_every_downstream_once_in_order(
    backend: str, vhost: Vhost, tmp_path: Path, topology_file: Any
) -> None:
    data = topologies.fast_data()
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    stores = tmp_path / "stores"
    env = worker_env(vhost.amqp_url, topology_file(data), stores, extra={"PYTHONPATH": str(ROOT)})
    workers = subprocess.Popen(worker_command("all"), env=env)
    background: list[subprocess.Popen[bytes]] = []
    async with _database(backend, tmp_path) as dsn:
        try:
            background = await asyncio.to_thread(_run_guide, dsn, env, tmp_path)
            shop, engine = _shop(), create_async_engine(dsn)
            try:
                # A business transaction that fails after its event: nothing is emitted.
                with pytest.raises(RuntimeError):
                    async with engine.begin() as conn:
                        items = [LineItem(sku="SKU-1", qty=1, price="5.00")]
                        await shop.place_order(conn, "rolled-back", "c-1", items)
                        raise RuntimeError("the customer's card bounced")
                # 20 writers race to pay, then to ship, one order.
                async with engine.begin() as conn:
                    items = [LineItem(sku="SKU-2", qty=2, price="3.50")]
                    await shop.place_order(conn, "raced", "c-2", items)
                won: list[str] = []

                async def writer(step: str) -> None:
                    try:
                        async with engine.begin() as conn:
                            if step == "pay":
                                await shop.pay(conn, "raced", PaymentMethod.CARD)
                            else:
                                await shop.ship(conn, "raced", "DHL", "TRK-RACE")
                        won.append(step)
                    except IllegalTransition:
                        pass

                for step in ("pay", "ship"):
                    await asyncio.gather(*(writer(step) for _ in range(20)))
                assert won == ["pay", "ship"]
                async with engine.connect() as conn:
                    rows = await conn.execute(
                        select(outbox.c.order_id, outbox.c.seq).where(
                            outbox.c.order_id.in_(["raced", "rolled-back"])
                        )
                    )
                    assert sorted(rows) == [("raced", 1), ("raced", 2), ("raced", 3)]
            finally:
                await engine.dispose()

            expected = {f"shop-1-{n:05d}" for n in range(ORDERS)} | {"raced"}

            def applied_everywhere() -> dict[str, dict[str, list[int]]] | None:
                assert workers.poll() is None, f"the workers exited with {workers.returncode}"
                for proc in background:
                    assert proc.poll() is None, "the relay exited"
                seen = {d: _inbox(stores / f"{d}.db") for d in spec.downstreams}
                done = all(sum(map(len, s.values())) >= 3 * len(expected) for s in seen.values())
                return seen if done else None

            seen = await eventually(applied_everywhere, within=120, what="every order applied")
            for d, seqs in seen.items():
                assert set(seqs) == expected, f"{d}: {set(seqs) ^ expected}"
                assert all(s == [1, 2, 3] for s in seqs.values()), f"{d}: {seqs}"
        finally:
            for proc in [*background, workers]:
                proc.terminate()
            for proc in [*background, workers]:
                assert proc.wait(30) == 0


def test_the_guide_names_the_example_and_its_commands() -> None:
    commands = _guide_commands()
    assert commands[0] == "cd examples/order_service"
    assert any(c.startswith("python -m producer relay") and c.endswith("&") for c in commands)
    assert commands[-1] == f"python shop.py --orders {ORDERS}"
    assert os.path.isfile(EXAMPLE / "alembic.ini")
