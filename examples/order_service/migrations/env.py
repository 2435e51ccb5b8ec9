"""The shop's Alembic environment: its own tables and the bus's outbox (`producer.api`)."""

from __future__ import annotations

import asyncio
import os

import shop
from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from producer import api

# Both sets of tables, so that autogenerate compares the whole database.
target_metadata = [shop.metadata, api.metadata]


def migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run() -> None:
    engine = create_async_engine(os.environ["SHOP_DSN"])
    async with engine.connect() as connection:
        await connection.run_sync(migrate)
    await engine.dispose()


asyncio.run(run())
