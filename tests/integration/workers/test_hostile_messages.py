"""Hostile input at a live worker: every message is dead-lettered as malformed (or applied if
valid), the worker never stops, and the next good order is applied."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aiormq.exceptions import PublishError
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from broker.queues import queue_depth
from operations.dlq import DeadLetters
from tests.support.amqp import publish_events
from tests.support.factories import order_events
from tests.support.fixtures import Vhost
from tests.support.polling import eventually
from tests.support.workers import by_order, running_workers
from topology import names
from topology.spec import TopologySpec

pytestmark = pytest.mark.integration
D = "inventory"

int64 = st.integers(-(2**63), 2**63 - 1)
# Everything an AMQP field table can carry (pamqp refuses raw bytes and wider numbers).
header_values = st.one_of(
    st.none(),
    st.booleans(),
    int64,
    st.floats(width=32, allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
    st.lists(int64, max_size=3),
    st.dictionaries(st.text(max_size=5), int64, max_size=3),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
valid_body = order_events("template")[0].model_dump(mode="json")
bodies = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    # a real envelope with one field broken
    st.tuples(st.sampled_from(sorted(valid_body)), json_values).map(
        lambda kv: json.dumps({**valid_body, kv[0]: kv[1]}).encode()
    ),
    st.integers(100_000, 2_000_000).map(lambda n: b"{" + b'"x":' + b"1" * n + b"}"),  # huge
    st.just("{}".encode("utf-16")),
)
messages = st.fixed_dictionaries(
    {
        "body": bodies,
        "headers": st.dictionaries(
            st.sampled_from(["order_id", "seq", "x-attempts", "x-deferrals", "other"]),
            header_values,
            max_size=5,
        ),
        "content_type": st.sampled_from(
            [None, "application/json", "text/plain", "application/xml"]
        ),
        "message_id": st.one_of(st.none(), st.text(max_size=40)),
        "type": st.one_of(st.none(), st.sampled_from(["order.created", "order.paid", "nonsense"])),
    }
)


# Each example runs a worker against 30 messages: ten examples are 300 hostile messages.
@settings(
    max_examples=10,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    batch=st.lists(messages, min_size=25, max_size=25),
    # Hostile messages the hash exchange can route (an order_id it hashes), so every batch
    # reaches the worker whatever the rest of it is.
    routable=st.lists(
        st.tuples(messages, st.text(min_size=1, max_size=40)).map(
            lambda mo: {**mo[0], "headers": {**mo[0]["headers"], "order_id": mo[1]}}
        ),
        min_size=5,
        max_size=5,
    ),
)
def test_hostile_messages_never_stop_the_worker(
    batch: list[dict[str, Any]],
    routable: list[dict[str, Any]],
    vhost: Vhost,
    fast_spec: TopologySpec,
    tmp_path: Path,
) -> None:
    asyncio.run(_run([*routable, *batch], vhost, fast_spec, tmp_path))


async def _run(
    batch: list[dict[str, Any]], vhost: Vhost, spec: TopologySpec, tmp_path: Path
) -> None:
    if not vhost.client.queue(vhost.name, names.dlq(D)):
        vhost.apply(spec)
    good = order_events(f"good-{datetime.now(UTC).timestamp()}")
    async with running_workers(vhost.amqp_url, spec, tmp_path, names=[D]) as workers:
        connection = await aio_pika.connect(vhost.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            before = await queue_depth(channel, names.dlq(D))
            exchange = await channel.get_exchange(names.hash_exchange(D), ensure=False)
            routed, unroutable = 0, 0
            for m in batch:
                message = aio_pika.Message(
                    m["body"],
                    headers=m["headers"],
                    content_type=m["content_type"],
                    message_id=m["message_id"],
                    type=m["type"],
                )
                try:
                    await exchange.publish(message, routing_key="", mandatory=True)
                    routed += 1
                except PublishError:
                    # Returned unroutable: only a message without a string order_id to hash.
                    assert (
                        not isinstance(m["headers"].get("order_id"), str)
                        or not m["headers"]["order_id"]
                    ), m["headers"]
                    unroutable += 1
                except (TypeError, OverflowError):
                    pass  # the client cannot even encode it: it never reaches the broker
            assert routed >= 5, (routed, unroutable)
            await publish_events(vhost.amqp_url, good)
            applied = await eventually(
                lambda: _applied(workers, good[0].order_id), within=60, what="good order"
            )
            assert applied == [1, 2, 3]
            await eventually(
                lambda: _dead(channel, before + routed), within=60, what="all dead-lettered"
            )
        # Every routed hostile message is in the DLQ as malformed; only good orders applied.
        async with DeadLetters(vhost.amqp_url, D) as dead:
            assert dead.complete, dead.shortfall
            assert len(dead.messages) == before + routed
            assert {m.reason for m in dead.messages} == {"malformed"}
        applied_orders = {r.order_id for r in await workers.workers[0].store.inbox_rows()}
        assert all(o.startswith("good-") for o in applied_orders)


async def _applied(workers: Any, order_id: str) -> list[int] | None:
    seqs = by_order(await workers.workers[0].store.inbox_rows()).get(order_id)
    return seqs if seqs and len(seqs) == 3 else None


async def _dead(channel: Any, n: int) -> bool:
    return await queue_depth(channel, names.dlq(D)) >= n
