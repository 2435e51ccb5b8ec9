"""/healthz and /readyz on a worker's metrics port: they follow its broker connection."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.management import ManagementError
from tests.support import topologies
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.processes import free_port, worker_process

pytestmark = pytest.mark.integration
USER = "guest"


def _probe(port: int, path: str) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code
    except httpx.HTTPError:
        return 0


async def test_readyz_goes_unready_without_the_broker_and_ready_after_reconnect(
    vhost: Vhost, tmp_path: Path, topology_file: Any
) -> None:
    data = topologies.fast_data()
    vhost.apply(topologies.spec_of(data))
    port = free_port()
    with worker_process(
        vhost.amqp_url, topology_file(data), tmp_path, "inventory", metrics_port=port
    ):
        await eventually(lambda: _probe(port, "/readyz") == 200, within=60, what="ready")
        assert _probe(port, "/healthz") == 200
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        assert "process_cpu_seconds_total" in metrics and "bus_worker_consumed_total" in metrics

        # The management API lists new connections a few seconds late.
        connections = await eventually(
            lambda: [c["name"] for c in vhost.client.connections(vhost.name)],
            within=30,
            what="the worker's connections listed",
        )
        # The broker refuses the worker (its permissions gone) and drops its connections.
        vhost.client.set_permissions(vhost.name, USER, "", "", "")
        try:
            for name in connections:
                # Closing one ends the worker's session, which closes the other itself: the
                # broker may answer 500 for a connection already going.
                with contextlib.suppress(ManagementError):
                    vhost.client.close_connection(name)
            await eventually(lambda: _probe(port, "/readyz") == 503, within=30, what="unready")
            assert _probe(port, "/healthz") == 503
        finally:
            vhost.client.set_permissions(vhost.name, USER, ".*", ".*", ".*")
        await eventually(lambda: _probe(port, "/readyz") == 200, within=60, what="ready again")
