"""Producer and five downstreams under load while processes die, connections drop, a
downstream's handler fails for a stretch, and (where the test may control it) the broker
application stops and starts.

Run alone with `pytest -m chaos`. At the end it proves from the outbox, the stores, the DLQs
and the stream: every event applied exactly once per downstream, in seq order, poisoned orders
dead-lettered with a reason, nothing missing; it prints the faults and the figures.

When `BUS_REQUIRE` names `broker-control` (set by `scripts/test` when `rabbitmqctl` controls
the local broker), `rabbitmqctl stop_app` / `start_app` join the faults. The seed of the fault
schedule is printed first and named in every failure; `BUS_CHAOS_SEED` replays it.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from broker.management import ManagementError
from producer.db import create_schema, make_engine
from simulation.orders import OrderStore
from simulation.traffic import TrafficStats, run_traffic
from tests.support import topologies
from tests.support.fixtures import Vhost
from tests.support.fleet import Fleet
from tests.support.judge import Expected, expected_from_outbox
from tests.support.polling import eventually
from tests.support.required import required
from tests.support.settling import (
    dead_letters,
    in_stream,
    outbox_ids,
    settle,
    store_failures,
)
from topology.spec import TopologySpec
from workers.process.launch import worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
ORDERS = 900
ORDERS_PER_SECOND = 45
OUTAGE_SECONDS = 1.5
# Broker restarts join the faults where this run controls the broker (rabbitmqctl).
CONTROL_BROKER = required("broker-control")
# A new fault schedule every run unless BUS_CHAOS_SEED replays one; the seed is printed.
SEED = int(os.environ.get("BUS_CHAOS_SEED") or random.randrange(1_000_000))


async def _rabbitmqctl(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {err.decode()}")


async def _restart_broker_app(vhost: Vhost) -> float:
    """stop_app, a pause, start_app; returns seconds until the management API answers again."""
    started = time.monotonic()
    try:
        await _rabbitmqctl("stop_app")
        await asyncio.sleep(1.0)
    finally:  # whatever happens, the machine's broker is left running
        await _rabbitmqctl("start_app")
    await _rabbitmqctl("await_startup", "--timeout", "60")

    def answers() -> bool:
        try:
            vhost.client.connections(vhost.name)
        except ManagementError:
            return False
        return True

    await eventually(answers, within=60, every=0.5, what="the management API back")
    return time.monotonic() - started


def _schedule(rng: random.Random, downstreams: list[str]) -> list[str]:
    faults = ["relay", "relay", "connections", "connections", "outage", "outage"]
    faults += ["worker"] * 6
    rng.shuffle(faults)
    if CONTROL_BROKER:
        faults.insert(len(faults) // 2, "broker")
    return faults


async def _chaos(fleet: Fleet, vhost: Vhost, outages: Path, rng: random.Random) -> None:
    """Inject every scheduled fault, a second or so apart."""
    for fault in _schedule(rng, fleet.downstreams):
        await asyncio.sleep(rng.uniform(0.5, 1.2))
        if fault == "relay":
            fleet.kill("relay")
        elif fault == "worker":
            fleet.kill(rng.choice(fleet.downstreams))
        elif fault == "connections":
            conns = vhost.client.connections(vhost.name)
            for conn in conns:
                vhost.client.close_connection(conn["name"], "chaos")
            fleet.faults.append("closed every connection")
        elif fault == "outage":
            # The handler fails every event for a stretch, then heals.
            victim = rng.choice(fleet.downstreams)
            switch = outages / victim
            switch.touch()
            fleet.faults.append(f"{OUTAGE_SECONDS}s handler outage of {victim}")
            asyncio.get_running_loop().call_later(OUTAGE_SECONDS, switch.unlink, True)
        else:
            took = await _restart_broker_app(vhost)
            fleet.faults.append(f"broker stop_app/start_app ({took:.1f}s)")


@dataclass
class Outcome:
    """What a chaos run left behind, read after it settled."""

    traffic: TrafficStats
    want: Expected
    dead: dict[str, list[tuple[str, str, str]]]
    in_stream: bool
    recovered: float
    elapsed: float


async def test_everything_applies_once_in_order_through_faults(
    vhost: Vhost, tmp_path: Path, topology_file: Any
) -> None:
    # Retry budget 0.2+0.4+0.8x5 s outlasts an outage: a healed handler loses nothing.
    # Deferral budget 600 x 0.2 s outlasts the broker's dead-letter re-send delay after a
    # restart (scripts/broker-up sets it to 10 s): a late predecessor is waited for.
    data = topologies.fast_data()
    for ds in data["downstreams"].values():
        ds["retry"]["max_attempts"] = 8
        ds["retry"]["max_deferrals"] = 600
    spec = topologies.spec_of(data)
    vhost.apply(spec)
    db = tmp_path / "orders.db"
    outages = tmp_path / "outages"
    outages.mkdir()
    env = worker_env(
        vhost.amqp_url,
        topology_file(data),
        tmp_path / "stores",
        log_level=os.environ.get("BUS_CHAOS_LOG_LEVEL", "INFO"),
        extra={
            "LOG_JSON": "true",
            "WORKERS_OUTAGE_DIR": str(outages),
            "PRODUCER_DSN": f"sqlite+aiosqlite:///{db}",
        },
    )
    fleet = Fleet(env, list(spec.downstreams), tmp_path / "logs")
    print(f"\nchaos: BUS_CHAOS_SEED={SEED} replays this run's fault schedule", flush=True)
    outcome = await _run(fleet, vhost, spec, db, outages, tmp_path / "stores")
    names, want, dead = fleet.downstreams, outcome.want, outcome.dead
    figures = fleet.totals()
    reasons = Counter(reason for letters in dead.values() for _, reason, _ in letters)
    _print_figures(fleet, outcome, figures, reasons)
    failed = store_failures(names, tmp_path / "stores", want, dead, tmp_path / "logs", db)
    healthy_dead = {
        d: Counter(reason for order_id, reason, _ in letters if order_id not in want.poisoned)
        for d, letters in dead.items()
    }
    assert not failed, (SEED, failed, {d: dict(c) for d, c in healthy_dead.items() if c})
    assert outcome.in_stream, SEED
    # poison and its parked successors only: the outages healed within the retry ladder
    assert set(reasons) <= {"non-retryable", "blocked-by-predecessor"}, (SEED, reasons)
    assert figures.get("redeliveries", 0) > 0, SEED  # the kills really interrupted deliveries
    assert any(f.startswith("SIGKILL relay") for f in fleet.faults), SEED
    assert any("outage" in f for f in fleet.faults), SEED
    assert not CONTROL_BROKER or any(f.startswith("broker") for f in fleet.faults), SEED


async def _run(
    fleet: Fleet, vhost: Vhost, spec: TopologySpec, db: Path, outages: Path, stores: Path
) -> Outcome:
    """Traffic through the relay and the workers while the faults hit; then wait to settle."""
    engine = make_engine(f"sqlite+aiosqlite:///{db}")
    await create_schema(engine)
    started = time.monotonic()
    done = asyncio.Event()
    try:
        for name in ["relay", *fleet.downstreams]:
            fleet.start(name)
        scraper = asyncio.create_task(fleet.scrape(done))
        chaos = asyncio.create_task(_chaos(fleet, vhost, outages, random.Random(SEED)))
        traffic = await run_traffic(
            OrderStore(engine),
            ORDERS,
            seed=99,
            concurrency=4,
            rate=ORDERS_PER_SECOND,
            flaky_rate=0.1,
            poison_rate=0.03,
        )
        await chaos  # every scheduled fault happens under load
        faults_done = time.monotonic()
        want = expected_from_outbox(db)
        healthy, poisoned = len(want.healthy), len(want.dead)
        await settle(
            vhost.amqp_url,
            vhost.client,
            vhost.name,
            stores,
            spec,
            (healthy, poisoned),
            180,
            db,
            fleet.assert_alive,
            f" (BUS_CHAOS_SEED={SEED})",
        )
        recovered = time.monotonic() - faults_done
        await fleet.scraped_again()  # the settled counters
        done.set()
        await scraper
        dead = await dead_letters(vhost.amqp_url, fleet.downstreams)
        everything = await in_stream(vhost.amqp_url, spec.log.name, outbox_ids(db))
    finally:
        done.set()
        fleet.stop_all()
        await engine.dispose()
    return Outcome(traffic, want, dead, everything, recovered, time.monotonic() - started)


def _print_figures(
    fleet: Fleet, outcome: Outcome, figures: dict[str, int], reasons: Counter[str]
) -> None:
    traffic, dead = outcome.traffic, outcome.dead
    print(
        f"\nchaos (BUS_CHAOS_SEED={SEED}): {traffic.orders} orders, {traffic.events} events, "
        f"{len(outcome.want.poisoned)} poisoned, {len(fleet.faults)} faults:\n  "
        + "\n  ".join(f"{c} x {f}" for f, c in Counter(fleet.faults).items())
        + f"\n  redeliveries >= {figures.get('redeliveries', 0)}, duplicates caught >= "
        f"{figures.get('duplicates caught', 0)}, deferrals >= {figures.get('deferrals', 0)}, "
        f"retries >= {figures.get('retries', 0)}; dead letters by reason {dict(reasons)} "
        f"(crash duplicates {sum(len(v) - len({e for *_, e in v}) for v in dead.values())}); "
        f"every outbox event in the stream: {outcome.in_stream}\n  settled "
        f"{outcome.recovered:.1f}s after the last fault, {outcome.elapsed:.1f}s in all"
    )
