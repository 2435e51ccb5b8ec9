"""The whole path on PostgreSQL, as compose runs it: orders written with their outbox rows in
one transaction, the relay publishing them, the five downstreams applying them into their
schemas; judged from the outbox (every effect exact, poison parked, nothing else)."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.db import create_schema, make_engine
from simulation.orders import OrderStore
from simulation.traffic import run_traffic
from tests.support.fixtures import Vhost
from tests.support.judge import expected_from_outbox, judge_store
from tests.support.polling import eventually
from tests.support.producer import postgres_database, running_relay, wait_for_backlog
from tests.support.settling import dead_letters
from tests.support.workers import inbox_counts, running_workers
from topology.spec import TopologySpec

pytestmark = pytest.mark.integration
ORDERS = 150


async def test_outbox_relay_and_five_downstreams_on_postgresql(
    vhost: Vhost, fast_spec: TopologySpec, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    async with postgres_database() as dsn:
        engine = make_engine(dsn)
        await create_schema(engine)
        try:
            async with running_workers(vhost.amqp_url, fast_spec, tmp_path, dsn=dsn) as workers:
                assert all(not w.store.inline for w in workers.workers)  # not SQLite
                async with running_relay(engine, vhost.amqp_url, fast_spec):
                    stats = await run_traffic(
                        OrderStore(engine), ORDERS, seed=11, flaky_rate=0.1, poison_rate=0.05
                    )
                    await wait_for_backlog(engine)
                want = expected_from_outbox(dsn)
                assert (stats.orders, stats.poison_orders) == (ORDERS, len(want.poisoned))
                assert want.poisoned and len(want.orders) == ORDERS

                async def applied() -> bool:
                    counts = await inbox_counts(workers)
                    return all(n == len(want.healthy) for n in counts.values())

                await eventually(applied, within=120, what="every healthy event applied")

                async def parked() -> dict[str, list[tuple[str, str, str]]] | None:
                    dead = await dead_letters(vhost.amqp_url, list(fast_spec.downstreams))
                    full = all(len({e for *_, e in v}) == len(want.dead) for v in dead.values())
                    return dead if full else None

                dead = await eventually(parked, within=60, what="every poisoned event parked")
        finally:
            await engine.dispose()
        failed = [
            line for d in fast_spec.downstreams for line in judge_store(d, dsn, want, dead[d])
        ]
    assert not failed, failed
