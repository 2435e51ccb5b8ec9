"""TLS through the same settings: amqps:// with a CA file for workers, producers and the
tools, https for the management API, a client certificate for mutual TLS, and clear errors.

Needs the local broker's TLS listeners (`scripts/broker-up --tls`, which `scripts/test`
runs); without them these tests skip, unless BUS_REQUIRE names `tls` (as `scripts/test` does
on a machine whose broker it runs), which makes that a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from broker.management import ManagementClient
from common.settings import Settings, with_vhost
from tests.support.amqp import publish_events
from tests.support.broker import Broker
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.required import skip_or_fail
from topology.spec import TopologySpec
from workers.process.app import build
from workers.process.settings import WorkerSettings

pytestmark = pytest.mark.integration
TLS_DIR = Path(os.environ.get("BUS_TLS_DIR", "/etc/rabbitmq/bus-tls"))
AMQPS = "amqps://guest:guest@localhost:5671/"
HTTPS = "https://guest:guest@localhost:15671"


@dataclass(frozen=True)
class Tls:
    """The local broker's TLS material."""

    ca: Path
    cert: Path
    key: Path


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 2).close()
    except OSError:
        return False
    return True


@pytest.fixture
def tls(broker: Broker) -> Tls:
    """The CA and a client certificate of the broker's TLS listeners."""
    found = Tls(TLS_DIR / "ca.pem", TLS_DIR / "client.pem", TLS_DIR / "client.key")
    if not (found.ca.is_file() and _answers(5671) and _answers(15671)):
        skip_or_fail("tls", f"no TLS listeners with a CA in {TLS_DIR}: run scripts/broker-up --tls")
    return found


async def _vhost_connections(vhost: Vhost, count: int) -> list[dict[str, Any]]:
    """The vhost's connections once the management API lists `count` of them (stats lag)."""

    async def listed() -> list[dict[str, Any]] | None:
        conns = vhost.client.connections(vhost.name)
        return conns if len(conns) >= count else None

    result: list[dict[str, Any]] = await eventually(listed, within=20, what="connections listed")
    return result


async def test_a_worker_and_a_publisher_over_amqps_with_a_ca_file(
    vhost: Vhost, fast_spec: TopologySpec, tls: Tls, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    settings = WorkerSettings(
        amqp_url=with_vhost(AMQPS, vhost.name), amqp_ca_file=tls.ca, workers_store_dir=tmp_path
    )
    workers = await build(fast_spec, ["inventory"], settings)
    stop = asyncio.Event()
    task = asyncio.create_task(workers.run(stop))
    try:
        events = [e for i in range(5) for e in order_events(f"tls-{i}")]
        assert await publish_events(settings.amqp_url, events) == len(events)
        store = workers.workers[0].store

        async def applied() -> bool:
            return len(await store.inbox_rows()) >= len(events)

        await eventually(applied, within=60, what="applied over amqps")
        assert len(await store.inbox_rows()) == len(events)
        conns = await _vhost_connections(vhost, 1)
        assert conns and all(c["ssl"] for c in conns), [(c["name"], c["ssl"]) for c in conns]
        assert {c["ssl_protocol"] for c in conns} <= {"tlsv1.2", "tlsv1.3"}
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def test_a_client_certificate_reaches_the_broker(vhost: Vhost, tls: Tls) -> None:
    settings = Settings(
        amqp_url=with_vhost(AMQPS, vhost.name),
        amqp_ca_file=tls.ca,
        amqp_cert_file=tls.cert,
        amqp_key_file=tls.key,
    )
    connection = await aio_pika.connect(settings.amqp_url)
    async with connection:
        (conn,) = await _vhost_connections(vhost, 1)
    assert "order-bus client" in (conn.get("peer_cert_subject") or ""), conn


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "topology", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_tools_over_amqps_and_https(vhost: Vhost, fast_spec: TopologySpec, tls: Tls) -> None:
    vhost.apply(fast_spec)
    with ManagementClient(HTTPS, ca_file=tls.ca) as client:
        assert client.overview()["rabbitmq_version"]
    result = _cli(
        "--vhost",
        vhost.name,
        "status",
        "--json",
        AMQP_URL=AMQPS,
        AMQP_CA_FILE=str(tls.ca),
        RABBITMQ_MANAGEMENT_URL=HTTPS,
    )
    assert result.returncode == 0, result.stderr
    # Every downstream's row, with what only the AMQPS connection reads (exact DLQ depths and
    # parked orders) and what only the HTTPS API does (consumers).
    rows = {r["downstream"]: r for r in json.loads(result.stdout)["downstreams"]}
    assert set(rows) == set(fast_spec.downstreams)
    assert all((r["dlq"], r["parked_orders"], r["consumers"]) == (0, 0, 0) for r in rows.values())


def test_a_wrong_ca_or_a_plain_url_gives_a_clear_error(
    vhost: Vhost, fast_spec: TopologySpec, tls: Tls, tmp_path: Path
) -> None:
    vhost.apply(fast_spec)
    other = tmp_path / "other-ca.pem"
    make_ca = [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=stranger",
    ]
    key = str(tmp_path / "k")
    subprocess.run(["openssl", *make_ca, "-keyout", key, "-out", str(other)], check=True)
    amqps = with_vhost(AMQPS, vhost.name)
    wrong = _cli("dlq", "list", "inventory", AMQP_URL=amqps, AMQP_CA_FILE=str(other))
    assert wrong.returncode == 1
    assert "certificate verify failed" in wrong.stderr, wrong.stderr
    assert "Traceback" not in wrong.stderr
    plain = _cli("dlq", "list", "inventory", AMQP_URL=vhost.amqp_url, AMQP_CA_FILE=str(tls.ca))
    assert plain.returncode == 1
    assert "amqps://" in plain.stderr and "Traceback" not in plain.stderr, plain.stderr
    # the plain URL without TLS settings still works: nothing about TLS leaks into it
    assert _cli("dlq", "list", "inventory", AMQP_URL=vhost.amqp_url).returncode == 0
