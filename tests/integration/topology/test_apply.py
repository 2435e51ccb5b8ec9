"""plan / apply / export against a real broker, one fresh vhost per test."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
import pytest

from broker.objects import BindingDef, PolicyDef, QueueDef
from broker.queues import queue_depth
from operations.cli import main
from tests.support import topologies
from tests.support.amqp import publish_confirmed
from tests.support.fixtures import Vhost
from tests.support.polling import eventually, eventually_sync
from topology.compile import compile_topology

pytestmark = pytest.mark.integration


def _cli(vhost: Vhost, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    vhost.env(monkeypatch)
    return main(list(args))


def _live_names(vhost: Vhost) -> dict[str, set[Any]]:
    c, v = vhost.client, vhost.name
    return {
        "exchanges": {
            e["name"]
            for e in c.list_objects("exchanges", v)
            if e["name"] and not e["name"].startswith("amq.")
        },
        "queues": {q["name"] for q in c.list_objects("queues", v)},
        "bindings": {
            (b["source"], b["destination_type"], b["destination"], b["routing_key"])
            for b in c.list_objects("bindings", v)
            if b["source"]
        },
        "policies": {p["name"] for p in c.list_objects("policies", v)},
    }


def test_apply_creates_exactly_the_compiled_objects_and_is_idempotent(
    vhost: Vhost,
    monkeypatch: pytest.MonkeyPatch,
    topology_file: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = topologies.default_data()
    path = topology_file(data)
    assert _cli(vhost, monkeypatch, "--file", str(path), "plan") == 3
    assert _cli(vhost, monkeypatch, "--file", str(path), "apply") == 0
    desired = compile_topology(topologies.spec_of(data))
    live = _live_names(vhost)
    assert live["exchanges"] == set(desired.exchanges)
    assert live["queues"] == set(desired.queues)
    assert live["bindings"] == {k[:4] for k in desired.bindings}
    assert live["policies"] == set(desired.policies)
    shard = vhost.client.queue(vhost.name, "inventory.0")
    assert shard is not None and shard["type"] == "quorum"
    assert shard["arguments"]["x-single-active-consumer"] is True
    capsys.readouterr()
    assert _cli(vhost, monkeypatch, "--file", str(path), "apply") == 0
    assert "nothing to change" in capsys.readouterr().out
    assert _cli(vhost, monkeypatch, "--file", str(path), "plan") == 0
    assert "the broker matches the file" in capsys.readouterr().out


async def test_an_older_tier_policy_loses_its_ttl_live_keeping_messages(
    vhost: Vhost,
    monkeypatch: pytest.MonkeyPatch,
    topology_file: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = topologies.default_data()
    path = topology_file(data)
    assert _cli(vhost, monkeypatch, "--file", str(path), "apply") == 0
    # As an older version applied it: the tier's TTL dead-lettered copies back to the shards.
    older = PolicyDef(
        "loyalty.retry.long",
        r"^loyalty\.retry\.long$",
        {
            "message-ttl": 3_600_000,
            "dead-letter-exchange": "loyalty",
            "overflow": "reject-publish",
            "dead-letter-strategy": "at-least-once",
        },
    )
    vhost.client.put_policy(vhost.name, older)
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        message = aio_pika.Message(b"waiting", headers={"order_id": "o-1"})
        await publish_confirmed(channel, "loyalty.retry", [("long", message)])
        capsys.readouterr()
        assert _cli(vhost, monkeypatch, "--file", str(path), "plan") == 3
        out = capsys.readouterr().out
        assert "update policy loyalty.retry.long" in out and "(live)" in out
        assert _cli(vhost, monkeypatch, "--file", str(path), "apply") == 0
        assert _cli(vhost, monkeypatch, "--file", str(path), "plan") == 0
        assert await queue_depth(channel, "loyalty.retry.long") == 1

        def no_ttl() -> bool:
            q = vhost.client.queue(vhost.name, "loyalty.retry.long") or {}
            effective = q.get("effective_policy_definition") or {}
            return "message-ttl" not in effective and "dead-letter-exchange" not in effective

        await eventually(no_ttl, within=30, what="the tier without TTL and dead-lettering")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["downstreams"]["warehouse"].update(
                shards=6, queue_type="classic", delivery_limit=None
            ),
            "queue warehouse.0: x-queue-type 'quorum' -> 'classic'",
        ),
        (
            lambda d: d["downstreams"]["fraud_audit"].update(
                queue_type="classic", delivery_limit=None
            ),
            "queue fraud_audit.0: x-queue-type 'quorum' -> 'classic'",
        ),
    ],
)
def test_migrations_are_refused_and_nothing_changes(
    vhost: Vhost,
    monkeypatch: pytest.MonkeyPatch,
    topology_file: Any,
    capsys: pytest.CaptureFixture[str],
    change: Any,
    expected: str,
) -> None:
    data = topologies.default_data()
    assert _cli(vhost, monkeypatch, "--file", str(topology_file(data)), "apply") == 0
    before = _live_names(vhost)
    policies_before = {
        p["name"]: p["definition"] for p in vhost.client.list_objects("policies", vhost.name)
    }
    change(data)
    path = topology_file(data, "changed.yaml")
    capsys.readouterr()
    assert _cli(vhost, monkeypatch, "--file", str(path), "plan") == 3
    out = capsys.readouterr().out
    assert expected in out and "(needs migration)" in out
    assert _cli(vhost, monkeypatch, "--file", str(path), "apply") == 1
    err = capsys.readouterr().err
    assert "refused" in err and expected in err and "Traceback" not in err
    assert _live_names(vhost) == before
    assert {
        p["name"]: p["definition"] for p in vhost.client.list_objects("policies", vhost.name)
    } == policies_before


async def _publish_to(vhost: Vhost, queue: str) -> None:
    connection = await aio_pika.connect(vhost.amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=queue)


def test_prune_deletes_what_the_file_no_longer_has(
    vhost: Vhost,
    monkeypatch: pytest.MonkeyPatch,
    topology_file: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = topologies.default_data()
    assert _cli(vhost, monkeypatch, "--file", str(topology_file(data)), "apply") == 0
    del data["downstreams"]["recommendations"]
    path = topology_file(data, "smaller.yaml")
    capsys.readouterr()
    assert _cli(vhost, monkeypatch, "--file", str(path), "apply") == 0
    assert "not in the file; kept" in capsys.readouterr().out
    assert "recommendations.0" in _live_names(vhost)["queues"]
    assert _cli(vhost, monkeypatch, "--file", str(path), "plan") == 3
    # A queue of the user's own, bound to `orders`, outside the bus's naming scheme.
    vhost.client.declare_queue(vhost.name, QueueDef("billing", {"x-queue-type": "classic"}))
    vhost.client.bind(vhost.name, BindingDef("orders", "billing", "queue", "order.#"))
    # One of the old downstream's shards still holds a message.
    asyncio.run(_publish_to(vhost, "recommendations.2"))
    eventually_sync(
        lambda: (vhost.client.queue(vhost.name, "recommendations.2") or {}).get("messages") == 1,
        within=30,
        what="the management API counting the message",
    )
    capsys.readouterr()
    assert _cli(vhost, monkeypatch, "--file", str(path), "plan") == 3
    shown = capsys.readouterr().out
    assert "recommendations.2" in shown and "1 message(s)" in shown
    assert "never pruned: queue billing" in shown

    # Without --yes: the list and a refusal, nothing touched.
    assert _cli(vhost, monkeypatch, "--file", str(path), "apply", "--prune") == 1
    refused = capsys.readouterr().err
    assert "refusing to prune" in refused and "recommendations.0" in refused
    assert "recommendations.0" in _live_names(vhost)["queues"]

    # With --yes: everything of the old downstream goes but the queue holding a message.
    assert _cli(vhost, monkeypatch, "--file", str(path), "apply", "--prune", "--yes") == 0
    assert "kept queue recommendations.2: it holds 1 message(s)" in capsys.readouterr().out
    live = _live_names(vhost)
    assert {n for n in live["queues"] if n.startswith("recommendations")} == {"recommendations.2"}
    assert "billing" in live["queues"]

    # --force deletes the full queue too; the user's queue stays.
    assert (
        _cli(vhost, monkeypatch, "--file", str(path), "apply", "--prune", "--yes", "--force") == 0
    )
    live = _live_names(vhost)
    assert not any(
        n.startswith("recommendations")
        for n in live["queues"] | live["exchanges"] | live["policies"]
    )
    assert "billing" in live["queues"]
    capsys.readouterr()
    assert _cli(vhost, monkeypatch, "--file", str(path), "plan") == 0  # billing is not ours
    assert "never pruned: queue billing" in capsys.readouterr().out


def test_export_is_importable_definitions(
    vhost: Vhost, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(vhost, monkeypatch, "export") == 0
    document = json.loads(capsys.readouterr().out)
    assert {v["name"] for v in document["vhosts"]} == {vhost.name}
    # The same import path as `rabbitmqctl import_definitions`.
    vhost.client.import_definitions(document)
    assert _cli(vhost, monkeypatch, "plan") == 0


def test_cli_errors_are_one_clear_message(
    vhost: Vhost, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("downstreams:\n  inventory:\n    prefetch: lots\n")
    assert _cli(vhost, monkeypatch, "--file", str(bad), "apply") == 1
    err = capsys.readouterr().err
    assert "downstreams.inventory.prefetch" in err and "Traceback" not in err
    assert not vhost.client.list_objects("queues", vhost.name)
    monkeypatch.setenv("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:1")
    assert main(["plan"]) == 1
    assert "cannot reach the RabbitMQ management API" in capsys.readouterr().err
