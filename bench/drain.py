"""Draining one backlog with the bus or with a peer, each as its own process, measured alike."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml

from bench.ceiling import node_consumer
from bench.common import Target, fresh_vhost, publish_all
from bench.measure import (
    HIGH,
    LOW,
    Mark,
    Report,
    Steady,
    parse_marks,
    parse_report,
    steady,
    tree_cpu,
)
from events import AnyEvent
from simulation.launch import simulated_worker_command
from topology import names
from topology.spec import TopologySpec
from workers.process.launch import worker_env

POLL_SECONDS = 0.05
DRAIN_TIMEOUT = 600.0


@dataclass
class Backlog:
    """A fresh vhost holding the same events in every downstream's shards."""

    amqp_url: str
    data: dict[str, Any]
    spec: TopologySpec
    tmp: Path
    per_downstream: int

    @property
    def downstreams(self) -> list[str]:
        """The downstreams of the topology."""
        return list(self.spec.downstreams)

    @property
    def total(self) -> int:
        """Deliveries in all (every event once per downstream)."""
        return self.per_downstream * len(self.downstreams)

    @property
    def topology_file(self) -> Path:
        """The topology written for the processes."""
        path = self.tmp / "orders.yaml"
        if not path.exists():
            path.write_text(yaml.safe_dump(self.data))
        return path


@contextmanager
def backlog(
    data: dict[str, Any], events: Sequence[AnyEvent], target: Target | None = None
) -> Iterator[Backlog]:
    """Apply the topology to a fresh vhost and publish the events (before anyone consumes)."""
    spec = TopologySpec.model_validate(data)
    with fresh_vhost(spec, target) as (url, _), tempfile.TemporaryDirectory() as tmp:
        asyncio.run(publish_all(url, events))
        yield Backlog(url, data, spec, Path(tmp), len(events))


def _applied(store: Path) -> int:
    """Rows in a SQLite store's inbox (max rowid: the inbox only grows; cheap to read)."""
    try:
        with contextlib.closing(sqlite3.connect(store, timeout=5)) as db:
            return int(db.execute("SELECT coalesce(max(rowid), 0) FROM inbox").fetchone()[0])
    except sqlite3.Error:
        return 0


def bus(
    b: Backlog, *args: str, expected: int | None = None, env: dict[str, str] | None = None
) -> Steady:
    """`python -m workers <args>` draining the backlog: steady rate per downstream, CPU."""
    stores = [b.tmp / f"{d}.db" for d in b.downstreams]
    process_env = worker_env(b.amqp_url, b.topology_file, b.tmp, extra=env)
    procs = [_start(simulated_worker_command(*args), process_env, b.tmp / "workers.log")]
    total = expected if expected is not None else b.total
    return watch(lambda: sum(_applied(s) for s in stores), procs, total, len(b.downstreams))


def processes(b: Backlog, downstream: str, count: int, dsn: str) -> tuple[Steady, list[float]]:
    """`count` processes of one downstream on a shared PostgreSQL store draining the backlog:
    the steady rate, CPU per event, and each process's share of a core in the window."""
    env = worker_env(b.amqp_url, b.topology_file, b.tmp, extra={"WORKERS_DSN": dsn})
    log = b.tmp / "workers.log"
    procs = [_start(simulated_worker_command(downstream), env, log) for _ in range(count)]
    before: list[float] = []
    after: list[float] = []

    def applied() -> int:
        return postgres_count(dsn, f'SELECT count(*) FROM "{downstream}".inbox')

    result = watch(applied, procs, b.per_downstream, 1, cpu_each=(before, after))
    shares = [(a - z) / result.window_s for z, a in zip(before, after, strict=True)]
    return result, shares


def watch(
    applied: Callable[[], int],
    procs: list[subprocess.Popen[bytes]],
    total: int,
    downstreams: int,
    cpu_each: tuple[list[float], list[float]] | None = None,
) -> Steady:
    """Poll the work done until `total`; steady window and CPU of the processes' trees."""
    try:
        marks: list[Mark] = []
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while (done := applied()) < total:
            if len(marks) < 2 and done >= (LOW if not marks else HIGH) * total:
                each = [tree_cpu(p.pid) for p in procs]
                if cpu_each is not None:
                    cpu_each[len(marks)].extend(each)
                marks.append(Mark(time.perf_counter(), done, sum(each)))
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"the workers applied {done} of {total} and stopped")
            time.sleep(POLL_SECONDS)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(60)
    return steady(marks[0], marks[1], downstreams)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database (BENCH_POSTGRES_URL's server); yields its DSN."""
    admin = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_count(dsn: str, sql: str) -> int:
    """One count from PostgreSQL (0 while the table does not exist yet)."""
    try:
        with psycopg.connect(dsn) as conn:
            row = conn.execute(sql).fetchone()
    except psycopg.Error:
        return 0
    return int(row[0]) if row else 0


def peer(b: Backlog, module: str, *extra: str) -> Steady:
    """A peer consumer (`python -m bench.<module>`) draining the backlog; it measures itself."""
    args = [b.amqp_url, str(b.topology_file), str(b.total), ",".join(b.downstreams), *extra]
    env = worker_env(b.amqp_url, b.topology_file, b.tmp)
    done = _run([sys.executable, "-m", f"bench.{module}", *args], env)
    low, high = parse_marks(done)
    return steady(low, high, len(b.downstreams))


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """The workers, their log lines (they render them as in production) into a file."""
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=out)


def catch_up(b: Backlog) -> dict[str, int]:
    """Each downstream's rate from its first to its last applied event (its inbox)."""
    rates = {}
    for d in b.downstreams:
        with contextlib.closing(sqlite3.connect(b.tmp / f"{d}.db")) as db:
            n, first, last = db.execute(
                "SELECT count(*), min(applied_at_us), max(applied_at_us) FROM inbox"
            ).fetchone()
        rates[d] = round(n / max((last - first) / 1e6, 1e-6))
    return rates


def _run(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=DRAIN_TIMEOUT, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{args[2]} failed: {done.stderr[-2000:]}")
    return done.stdout


@dataclass(frozen=True)
class PerDownstream:
    """Consumers a process per downstream: each downstream's rate from its first event to its
    last, and the CPU per event of every process."""

    rates: dict[str, float]
    cpu_us_per_event: float
    processes: int

    @property
    def slowest(self) -> float:
        """The slowest downstream's events/s: the bus is as fast as its slowest downstream."""
        return min(self.rates.values())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, rounded."""
        return {
            "slowest_events_per_s": round(self.slowest),
            "events_per_s": {d: round(r) for d, r in self.rates.items()},
            "cpu_us_per_event": round(self.cpu_us_per_event, 1),
            "processes": self.processes,
        }


def peers_per_downstream(b: Backlog, kind: str) -> PerDownstream | None:
    """A raw consumer process per downstream (`aio-pika`: python -m bench.consume; `node`:
    amqplib), all at once; None when that kind cannot run here (node missing)."""
    env = worker_env(b.amqp_url, b.topology_file, b.tmp)
    commands: dict[str, list[str]] = {}
    for d in b.downstreams:
        if kind == "node":
            script = node_consumer()
            if script is None:
                return None
            shards = ",".join(names.shard(d, i) for i in range(b.spec.downstreams[d].shards))
            prefetch = str(b.spec.downstreams[d].prefetch)
            commands[d] = ["node", str(script), b.amqp_url, str(b.per_downstream), prefetch, shards]
        else:
            args = [b.amqp_url, str(b.topology_file), str(b.per_downstream), d]
            commands[d] = [sys.executable, "-m", "bench.consume", *args]
    procs = {
        d: subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for d, cmd in commands.items()
    }
    reports: dict[str, Report] = {}
    for d, proc in procs.items():
        out, err = proc.communicate(timeout=DRAIN_TIMEOUT)
        if proc.returncode:
            raise RuntimeError(f"{commands[d][:3]} failed: {err[-2000:]}")
        reports[d] = parse_report(out)
    cpu = [r.steady().cpu_us_per_event for r in reports.values()]
    return PerDownstream(
        {d: r.span_rate for d, r in reports.items()}, sum(cpu) / len(cpu), len(procs)
    )


def bus_per_downstream(b: Backlog, *args: str, expected: int | None = None) -> PerDownstream:
    """`python -m workers <args>` (a process per downstream for `all`) draining the backlog:
    each downstream's rate from its first applied event to its last, and CPU per event."""
    drained = bus(b, *args, expected=expected)
    return PerDownstream(
        {d: float(r) for d, r in catch_up(b).items()}, drained.cpu_us_per_event, len(b.downstreams)
    )
