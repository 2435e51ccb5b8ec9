"""Least privilege: each role's credentials reach exactly as far as its role."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import aio_pika
import pytest
from aiormq.exceptions import ChannelAccessRefused

from common.settings import with_vhost
from operations.cli import main
from tests.support import topologies
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from topology.access import desired_users

pytestmark = pytest.mark.integration


@pytest.fixture
def access_users(vhost: Vhost, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The topology with unique users (users are broker-wide), passwords in the environment."""
    tag = uuid.uuid4().hex[:8]
    data = topologies.fast_data()
    data["access"] = {
        "producer_user": f"t{tag}-order-service",
        "worker_user_prefix": f"t{tag}-worker-",
        "operator_user": f"t{tag}-operator",
        "password_env_prefix": "BUS_TEST_PASSWORD_",
    }
    spec = topologies.spec_of(data)
    passwords = {}
    for user in desired_users(spec):
        passwords[user.name] = secrets.token_hex(12)
        monkeypatch.setenv(user.password_env, passwords[user.name])
    try:
        yield {"data": data, "spec": spec, "passwords": passwords, "tag": tag}
    finally:
        for user in desired_users(spec):
            vhost.client.delete_user(user.name)


def _url(vhost: Vhost, user: str, password: str) -> str:
    base = with_vhost(vhost.amqp_url, vhost.name)
    return base.replace("guest:guest@", f"{user}:{password}@")


async def _refused(url: str, action: Any) -> bool:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        try:
            await action(channel)
        except ChannelAccessRefused:
            return True
    return False


async def _ignore(message: Any) -> None:
    """A consumer callback that takes nothing (the test only asks whether consuming is allowed)."""


async def _consume(channel: Any, queue: str) -> None:
    q = await channel.get_queue(queue, ensure=False)
    await q.consume(_ignore)


async def _publish(channel: Any, exchange: str) -> None:
    ex = await channel.get_exchange(exchange, ensure=False)
    event = order_events("o-1")[0]
    from events import encode

    await ex.publish(encode(event), routing_key="order.created")


async def test_roles_reach_only_as_far_as_they_should(
    vhost: Vhost,
    monkeypatch: pytest.MonkeyPatch,
    topology_file: Any,
    access_users: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = str(topology_file(access_users["data"]))
    vhost.env(monkeypatch)
    assert main(["--file", path, "apply"]) == 0
    capsys.readouterr()
    assert main(["--file", path, "apply"]) == 0  # passwords compared by hash: nothing to change
    assert "nothing to change" in capsys.readouterr().out
    assert main(["--file", path, "plan"]) == 0

    tag, pw = access_users["tag"], access_users["passwords"]
    worker = _url(vhost, f"t{tag}-worker-inventory", pw[f"t{tag}-worker-inventory"])
    producer = _url(vhost, f"t{tag}-order-service", pw[f"t{tag}-order-service"])

    # A worker reads its own shards and DLQ, writes its retry and dead exchanges — nothing else.
    assert not await _refused(worker, lambda ch: _consume(ch, "inventory.0"))
    assert not await _refused(worker, lambda ch: _consume(ch, "inventory.dlq"))
    assert not await _refused(worker, lambda ch: _publish(ch, "inventory.retry"))
    assert await _refused(worker, lambda ch: _consume(ch, "loyalty.0"))
    assert await _refused(worker, lambda ch: _consume(ch, "loyalty.dlq"))
    assert await _refused(worker, lambda ch: _publish(ch, "orders"))
    assert await _refused(worker, lambda ch: _publish(ch, "loyalty.retry"))

    # The order service publishes to `orders` and reads nothing.
    assert not await _refused(producer, lambda ch: _publish(ch, "orders"))
    for queue in ("inventory.0", "inventory.dlq", "orders.unroutable", "orders.log"):
        assert await _refused(producer, lambda ch, q=queue: _consume(ch, q)), queue


def test_missing_passwords_are_reported_not_invented(
    vhost: Vhost,
    monkeypatch: pytest.MonkeyPatch,
    topology_file: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = topologies.fast_data()
    data["access"] = {"producer_user": "nobody-here", "password_env_prefix": "BUS_UNSET_"}
    vhost.env(monkeypatch)
    assert main(["--file", str(topology_file(data)), "apply"]) == 0
    out = capsys.readouterr().out
    assert "$BUS_UNSET_NOBODY_HERE is not set; not created" in out
    assert vhost.client.get_user("nobody-here") is None
