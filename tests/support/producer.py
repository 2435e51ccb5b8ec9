"""Fixtures for the order service: a store per backend, a relay that runs in the test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from producer.db import create_schema, make_engine, outbox
from producer.outbox import Outbox
from producer.relay import Relay
from tests.support.polling import eventually
from tests.support.required import skip_or_fail
from topology.spec import TopologySpec

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one test; yields its SQLAlchemy DSN."""
    try:
        import asyncpg
    except ImportError:  # a SQLite-only install: no `postgres` extra
        skip_or_fail("postgres", "the postgres extra is not installed (pip install '.[postgres]')")
    try:
        admin = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        # The stores and the outbox run on PostgreSQL in production: the suite needs it.
        pytest.fail(
            f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}; run scripts/postgres-up "
            "or set TEST_POSTGRES_URL"
        )
    name = f"bus_test_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@asynccontextmanager
async def store_engine(backend: str, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine with the schema created, on SQLite or PostgreSQL."""
    if backend == "sqlite":
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'orders.db'}")
        await create_schema(engine)
        try:
            yield engine
        finally:
            await engine.dispose()
        return
    async with postgres_database() as dsn:
        engine = make_engine(dsn)
        await create_schema(engine)
        try:
            yield engine
        finally:
            await engine.dispose()


@asynccontextmanager
async def running_relay(
    engine: AsyncEngine, amqp_url: str, spec: TopologySpec, **options: Any
) -> AsyncIterator[Relay]:
    """A relay running as a task for the duration of the block, stopped cleanly after."""
    relay = Relay(Outbox(engine), amqp_url, exchange=spec.exchange.name, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def wait_for_backlog(engine: AsyncEngine, left: int = 0, within: float = 60.0) -> None:
    """Wait until at most `left` outbox rows are unconfirmed."""

    async def drained() -> bool:
        return await Outbox(engine).backlog() <= left

    await eventually(drained, within=within, every=0.05, what=f"outbox backlog <= {left}")


async def outbox_ids(engine: AsyncEngine) -> list[str]:
    """Every event_id in the outbox, in outbox order."""
    async with engine.connect() as conn:
        return list((await conn.scalars(select(outbox.c.event_id).order_by(outbox.c.id))).all())
