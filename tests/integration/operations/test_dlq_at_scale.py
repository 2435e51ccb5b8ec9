"""The DLQ tools on a DLQ deeper than one AMQP prefetch can hold (65,535): paged, in order,
and saying plainly when another consumer holds part of it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from operations.cli import main
from operations.dlq import DeadLetters
from tests.support.amqp import dead_letter, depth, publish_to
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from topology import names
from topology.spec import TopologySpec

pytestmark = pytest.mark.integration
D = "inventory"
DLQ = names.dlq(D)
ORDERS = 35_000  # two dead letters each: 70,000, above the 65,535 one prefetch can hold


def _dead_letters() -> Iterator[tuple[str, aio_pika.Message]]:
    """Each order's created event failed for good and its paid event was parked behind it."""
    for i in range(ORDERS):
        created, paid, _ = order_events(f"ord-{i:05d}")
        yield dead_letter(created)
        yield dead_letter(paid)


async def settles_at(vhost: Vhost, expected: int) -> None:
    """Wait for the DLQ's ready count to reach `expected`."""

    async def reached() -> bool:
        return await depth(vhost.amqp_url, DLQ) == expected

    await eventually(reached, within=30, what=f"{DLQ} holding {expected} ready")


def _cli(vhost: Vhost, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    vhost.env(monkeypatch)
    return main(list(args))


async def test_seventy_thousand_dead_letters_are_listed_shown_and_redriven_in_part(
    vhost: Vhost,
    fast_spec: TopologySpec,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    vhost.apply(fast_spec)
    published = await publish_to(
        vhost.amqp_url, names.dead_exchange(D), _dead_letters(), window=1024
    )
    assert published == 2 * ORDERS and await depth(vhost.amqp_url, DLQ) == published

    # The whole queue is read in pages, in its order: the table counts every match.
    capsys.readouterr()
    assert await asyncio.to_thread(_cli, vhost, monkeypatch, "dlq", "list", D, "--limit", "5") == 0
    listed = capsys.readouterr()
    assert f"5 of {published:,} matching dead letter(s)" in listed.out
    assert not listed.err
    args = ("dlq", "list", D, "--limit", "3", "--json")
    assert await asyncio.to_thread(_cli, vhost, monkeypatch, *args) == 0
    head = [(r["order_id"], r["seq"]) for r in json.loads(capsys.readouterr().out)]
    assert head == [("ord-00000", 1), ("ord-00000", 2), ("ord-00001", 1)]

    # A filter reaches the last page: the final order's two letters, in queue order.
    last = f"ord-{ORDERS - 1:05d}"
    args = ("dlq", "list", D, "--order-id", last, "--json")
    assert await asyncio.to_thread(_cli, vhost, monkeypatch, *args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["order_id"], r["seq"], r["reason"]) for r in rows] == [
        (last, 1, "non-retryable"),
        (last, 2, "blocked-by-predecessor"),
    ]

    # show finds the last message of the queue, and the read stops there.
    shown_id = rows[1]["event_id"]
    assert await asyncio.to_thread(_cli, vhost, monkeypatch, "dlq", "show", D, shown_id) == 0
    assert f"event_id: {shown_id}" in capsys.readouterr().out
    assert await depth(vhost.amqp_url, DLQ) == published

    # A redrive in part: 1,000 messages leave the DLQ for the shards; the rest stay.
    args = ("dlq", "redrive", D, "--reason", "non-retryable", "--limit", "1000")
    assert await asyncio.to_thread(_cli, vhost, monkeypatch, *args) == 0
    assert "redrove 1000 message(s) of 1000 order(s)" in capsys.readouterr().out
    shards = [names.shard(D, i) for i in range(fast_spec.downstream(D).shards)]
    assert sum([await depth(vhost.amqp_url, s) for s in shards]) == 1000
    # A quorum queue counts the messages a closed channel returns only once it has applied
    # their return, a moment after the command has exited.
    await settles_at(vhost, published - 1000)


async def test_a_dlq_held_in_part_by_another_command_is_reported_as_partial(
    vhost: Vhost,
    fast_spec: TopologySpec,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vhost.apply(fast_spec)
    letters = (m for i, m in enumerate(_dead_letters()) if i < 40)
    await publish_to(vhost.amqp_url, names.dead_exchange(D), letters)

    # Another operator's command holds the first 25 (one page of 25, then it stops).
    async with DeadLetters(vhost.amqp_url, D, page=25, enough=lambda ms: len(ms) >= 25) as held:
        assert len(held.messages) == 25 and not held.shortfall
        capsys.readouterr()
        assert await asyncio.to_thread(_cli, vhost, monkeypatch, "dlq", "list", D) == 1
        partial = capsys.readouterr()
        assert "read 15 of the 15 ready dead letters" in partial.err
        assert "1 other consumer(s)" in partial.err and "partial" in partial.out
        # Moving part of what is parked would split orders: redrive refuses and moves nothing.
        assert await asyncio.to_thread(_cli, vhost, monkeypatch, "dlq", "redrive", D) == 1
        assert "nothing was moved" in capsys.readouterr().err
    await settles_at(vhost, 40)
    assert await asyncio.to_thread(_cli, vhost, monkeypatch, "dlq", "list", D) == 0
    assert "40 of 40 matching" in capsys.readouterr().out


async def test_dead_letters_outlive_more_reads_than_rabbitmq_4s_default_delivery_limit(
    vhost: Vhost, fast_spec: TopologySpec
) -> None:
    vhost.apply(fast_spec)

    def dlq_policy() -> bool:
        info = vhost.client.queue(vhost.name, DLQ)
        return info is not None and info.get("policy") == DLQ

    await eventually(dlq_policy, within=30, what=f"the {DLQ} policy in effect")
    letters = (m for i, m in enumerate(_dead_letters()) if i < 2)
    await publish_to(vhost.amqp_url, names.dead_exchange(D), letters)
    reads = 25  # RabbitMQ 4 drops a quorum DLQ's messages after 20 without the DLQ policy
    for _ in range(reads):
        async with DeadLetters(vhost.amqp_url, D) as dead:
            assert len(dead.messages) == 2
    async with DeadLetters(vhost.amqp_url, D) as dead:
        counts = [int(m.headers.get("x-delivery-count", 0)) for m in dead.messages]
    # Every read was counted as a delivery, and none dropped a dead letter.
    assert len(counts) == 2 and min(counts) >= reads
