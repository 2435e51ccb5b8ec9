"""The consume-only AMQP client over a fake transport: the broker's side played by the test.

Frames split at every byte boundary, many deliveries in one read, a missed heartbeat, a
blocked connection, channel numbers reused within channel_max, replies matched to their
requests, a new secret, and the broker closing or cancelling (and deliveries that follow our own
cancel).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pamqp import commands, frame
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from broker import channel as channel_module
from broker import frames as f
from broker.channel import AMQPClosed, ConsumerChannel, UnexpectedFrame
from broker.consumer import ChannelsExhausted, ConsumerConnection
from broker.received import Received

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"


class FakeTransport:
    """What the protocol writes, and whether it closed or aborted the connection."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def sent(self) -> list[tuple[int, Frame]]:
        """Every frame the client wrote so far (after the protocol header), and forget them."""
        data = bytes(self.written)
        self.written.clear()
        if data.startswith(PROTOCOL_HEADER):
            data = data[len(PROTOCOL_HEADER) :]
        out = []
        while data:
            used, number, value = frame.unmarshal(data)
            out.append((number, value))
            data = data[used:]
        return out


def _m(method: Frame, channel: int = 0) -> bytes:
    return frame.marshal(method, channel)


async def _flush() -> None:
    """Let the protocol's writes of this pass of the loop go out."""
    for _ in range(3):
        await asyncio.sleep(0)


async def _connected(heartbeat: int = 0, channel_max: int = 0) -> tuple[ConsumerConnection, Any]:
    connection = ConsumerConnection("guest", "guest", "/", "test", heartbeat=60)
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(_m(commands.Connection.Start(mechanisms="PLAIN AMQPLAIN")))
    connection.data_received(_m(commands.Connection.Tune(channel_max, 131_072, heartbeat)))
    connection.data_received(_m(commands.Connection.OpenOk()))
    await connection.opened
    await _flush()
    sent = [type(m) for _, m in transport.sent()]
    assert sent == [
        commands.Connection.StartOk,
        commands.Connection.TuneOk,
        commands.Connection.Open,
    ]
    return connection, transport


async def _channel(connection: ConsumerConnection, transport: Any) -> ConsumerChannel:
    """Open a channel, answering its open as the broker does."""
    opening = asyncio.create_task(connection.channel())
    await _flush()
    [(number, method)] = transport.sent()
    assert isinstance(method, commands.Channel.Open)
    connection.data_received(_m(commands.Channel.OpenOk(), number))
    return await opening


async def _consuming(
    connection: ConsumerConnection, transport: Any, received: list[Received]
) -> tuple[ConsumerChannel, str]:
    channel = await _channel(connection, transport)
    consuming = asyncio.create_task(channel.consume("q", received.append))
    await _flush()
    [(_, consume)] = transport.sent()
    assert isinstance(consume, commands.Basic.Consume)
    connection.data_received(_m(commands.Basic.ConsumeOk(consume.consumer_tag), channel.number))
    return channel, await consuming


def _delivery(channel: int, tag: str, delivery_tag: int, body: bytes, parts: int = 1) -> bytes:
    props = commands.Basic.Properties(
        content_type="application/json",
        headers={"order_id": f"ord-{delivery_tag}", "seq": delivery_tag % 3 + 1},
        message_id=f"evt-{delivery_tag}",
        message_type="order.created",
        timestamp=datetime(2026, 12, 4, tzinfo=UTC),
        app_id="order-service",
        delivery_mode=2,
    )
    out = _m(commands.Basic.Deliver(tag, delivery_tag, False, "orders", "order.created"), channel)
    out += frame.marshal(ContentHeader(0, len(body), props), channel)
    step = max(1, -(-len(body) // parts))
    for at in range(0, len(body), step):
        out += frame.marshal(ContentBody(body[at : at + step]), channel)
    return out


def _bodies(n: int) -> Iterator[bytes]:
    for i in range(1, n + 1):
        yield (b'{"n": %d, "pad": "' % i) + b"x" * (i * 37 % 300) + b'"}'


async def test_deliveries_split_at_every_byte_boundary_arrive_whole() -> None:
    bodies = list(_bodies(3))
    for split in range(1, 400):
        connection, transport = await _connected()
        received: list[Received] = []
        channel, tag = await _consuming(connection, transport, received)
        stream = b"".join(
            _delivery(channel.number, tag, i, body, parts=2 if i == 2 else 1)
            for i, body in enumerate(bodies, 1)
        )
        assert split < len(stream)
        connection.data_received(stream[:split])
        connection.data_received(stream[split:])
        assert [m.body for m in received] == bodies, f"split at byte {split}"
        assert [m.delivery_tag for m in received] == [1, 2, 3]
        assert received[0].message_id == "evt-1" and received[0].headers["order_id"] == "ord-1"
        assert received[0].type == "order.created" and received[0].app_id == "order-service"
        assert connection.is_open


async def test_a_stream_fed_one_byte_at_a_time_is_read_whole() -> None:
    connection, transport = await _connected()
    received: list[Received] = []
    channel, tag = await _consuming(connection, transport, received)
    bodies = list(_bodies(5))
    stream = b"".join(_delivery(channel.number, tag, i, b) for i, b in enumerate(bodies, 1))
    for i in range(len(stream)):
        connection.data_received(stream[i : i + 1])
    assert [m.body for m in received] == bodies


async def test_many_deliveries_in_one_read_reach_the_callback_in_order() -> None:
    connection, transport = await _connected()
    received: list[Received] = []
    channel, tag = await _consuming(connection, transport, received)
    bodies = list(_bodies(200))
    connection.data_received(
        b"".join(_delivery(channel.number, tag, i, b) for i, b in enumerate(bodies, 1))
    )
    assert [m.body for m in received] == bodies
    assert [m.delivery_tag for m in received] == list(range(1, 201))


async def test_acks_of_one_pass_of_the_loop_go_out_in_one_write() -> None:
    connection, transport = await _connected()
    channel = await _channel(connection, transport)
    writes: list[bytes] = []
    transport.write = writes.append
    channel.ack(5, multiple=True)
    channel.nack(7)
    channel.ack(8)
    await _flush()
    assert len(writes) == 1
    transport.write = FakeTransport.write.__get__(transport)
    transport.written += writes[0]
    sent = [m for _, m in transport.sent()]
    assert [type(m) for m in sent] == [commands.Basic.Ack, commands.Basic.Nack, commands.Basic.Ack]
    assert sent[0].delivery_tag == 5 and sent[0].multiple
    assert sent[1].delivery_tag == 7 and sent[1].requeue and not sent[1].multiple


async def test_a_broker_silent_for_two_heartbeats_ends_the_connection() -> None:
    connection, transport = await _connected(heartbeat=4)
    assert connection.heartbeat == 4
    loop = asyncio.get_running_loop()
    # Something arrived a moment ago: a heartbeat goes out and the connection stays.
    connection.data_received(f.HEARTBEAT)
    connection._heartbeat()
    assert connection.is_open and transport.written == f.HEARTBEAT
    # Nothing for more than two intervals: the connection is given up.
    connection._last_rx = loop.time() - 9
    connection._heartbeat()
    assert not connection.is_open and transport.aborted
    error = connection.closed.result()
    assert isinstance(error, AMQPClosed) and "missed heartbeats" in str(error)


async def test_a_blocked_connection_is_told_and_still_acks() -> None:
    connection, transport = await _connected()
    channel = await _channel(connection, transport)
    told: list[str | None] = []
    connection.on_blocked.append(told.append)
    connection.data_received(_m(commands.Connection.Blocked("low on memory")))
    assert connection.blocked == "low on memory"
    channel.ack(1)
    await _flush()
    assert [type(m) for _, m in transport.sent()] == [commands.Basic.Ack]
    connection.data_received(_m(commands.Connection.Unblocked()))
    assert connection.blocked is None
    assert told == ["low on memory", None]
    assert connection.is_open


async def test_start_ok_asks_for_blocked_notifications() -> None:
    connection = ConsumerConnection("guest", "guest", "/", "test", heartbeat=0)
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(_m(commands.Connection.Start(mechanisms="PLAIN")))
    await _flush()
    [(_, start_ok)] = transport.sent()
    assert isinstance(start_ok, commands.Connection.StartOk)
    capabilities = start_ok.client_properties["capabilities"]
    assert isinstance(capabilities, dict) and capabilities["connection.blocked"] is True


async def test_channel_numbers_are_reused_within_channel_max() -> None:
    connection, transport = await _connected(channel_max=3)
    first = [await _channel(connection, transport) for _ in range(3)]
    assert [c.number for c in first] == [1, 2, 3]
    with pytest.raises(ChannelsExhausted):
        await connection.channel()
    closing = asyncio.create_task(first[1].close())
    await _flush()
    [(number, close)] = transport.sent()
    assert number == 2 and isinstance(close, commands.Channel.Close)
    connection.data_received(_m(commands.Channel.CloseOk(), 2))
    await closing
    again = await _channel(connection, transport)
    assert again.number == 2
    # The broker closing a channel frees its number too.
    connection.data_received(_m(commands.Channel.Close(406, "PRECONDITION_FAILED", 60, 80), 3))
    await _flush()
    assert [(n, type(m)) for n, m in transport.sent()] == [(3, commands.Channel.CloseOk)]
    assert (await _channel(connection, transport)).number == 3


async def test_a_close_the_broker_never_confirmed_keeps_its_number_out_of_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(channel_module, "CLOSE_TIMEOUT", 0.01)
    connection, transport = await _connected(channel_max=2)
    one = await _channel(connection, transport)
    await one.close()  # no CloseOk comes
    assert not one.is_open
    assert [type(m) for _, m in transport.sent()] == [commands.Channel.Close]
    assert (await _channel(connection, transport)).number == 2
    with pytest.raises(ChannelsExhausted):
        await connection.channel()


async def test_a_reply_its_request_does_not_allow_is_a_protocol_error() -> None:
    connection, transport = await _connected()
    channel = await _channel(connection, transport)
    qos = asyncio.create_task(channel.qos(10))
    await _flush()
    transport.sent()
    connection.data_received(_m(commands.Basic.ConsumeOk("someone-else"), channel.number))
    with pytest.raises(UnexpectedFrame):
        await qos
    assert not connection.is_open and transport.aborted
    assert isinstance(connection.closed.result(), UnexpectedFrame)
    [(_, close)] = FakeTransport.sent(transport)
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 505


async def test_a_reply_with_no_request_waiting_is_a_protocol_error() -> None:
    connection, transport = await _connected()
    channel = await _channel(connection, transport)
    connection.data_received(_m(commands.Basic.QosOk(), channel.number))
    assert not connection.is_open and not channel.is_open


async def test_each_reply_answers_its_own_request() -> None:
    connection, transport = await _connected()
    channel = await _channel(connection, transport)
    qos = asyncio.create_task(channel.qos(10))
    consume = asyncio.create_task(channel.consume("q", lambda m: None))
    await _flush()
    # One request at a time per channel: the consume waits for the qos's reply.
    [(_, first)] = transport.sent()
    assert isinstance(first, commands.Basic.Qos)
    connection.data_received(_m(commands.Basic.QosOk(), channel.number))
    await qos
    await _flush()
    [(_, second)] = transport.sent()
    assert isinstance(second, commands.Basic.Consume)
    connection.data_received(_m(commands.Basic.ConsumeOk(second.consumer_tag), channel.number))
    assert await consume == second.consumer_tag


async def test_a_consume_the_broker_refuses_raises_with_its_code_and_frees_the_number() -> None:
    connection, transport = await _connected()
    channel = await _channel(connection, transport)
    consume = asyncio.create_task(channel.consume("gone", lambda m: None))
    await _flush()
    transport.sent()
    connection.data_received(
        _m(commands.Channel.Close(404, "NOT_FOUND - no queue 'gone'", 60, 20), channel.number)
    )
    with pytest.raises(AMQPClosed) as refused:
        await consume
    assert refused.value.code == 404
    assert not channel.consumers and connection.is_open
    await _flush()
    assert [type(m) for _, m in transport.sent()] == [commands.Channel.CloseOk]
    assert (await _channel(connection, transport)).number == channel.number


async def test_the_broker_cancelling_a_consumer_is_answered_and_told() -> None:
    connection, transport = await _connected()
    received: list[Received] = []
    channel, tag = await _consuming(connection, transport, received)
    cancelled: list[str] = []
    channel.on_cancel[tag] = cancelled.append
    connection.data_received(_m(commands.Basic.Cancel(tag), channel.number))
    await _flush()
    assert [type(m) for _, m in transport.sent()] == [commands.Basic.CancelOk]
    assert cancelled == [tag] and tag not in channel.consumers


async def test_deliveries_arriving_after_our_cancel_still_reach_the_consumer() -> None:
    # A quorum queue can forward what it dispatched before it read the cancel after the
    # cancel's reply: whoever cancelled finishes it (dropped, it would come back redelivered
    # to the shard's next owner when the channel closes).
    connection, transport = await _connected()
    received: list[Received] = []
    channel, tag = await _consuming(connection, transport, received)
    cancelling = asyncio.create_task(channel.cancel(tag))
    await _flush()
    [(_, cancel)] = transport.sent()
    assert isinstance(cancel, commands.Basic.Cancel)
    connection.data_received(_m(commands.Basic.CancelOk(tag), channel.number))
    await cancelling
    connection.data_received(_delivery(channel.number, tag, 1, b'{"late": true}'))
    assert [m.delivery_tag for m in received] == [1]
    assert tag not in channel.on_cancel


async def test_a_new_secret_is_sent_and_its_acceptance_awaited() -> None:
    connection, transport = await _connected()
    updating = asyncio.create_task(connection.update_secret("token-2", "rotated"))
    await _flush()
    [(number, update)] = transport.sent()
    assert number == 0 and isinstance(update, commands.Connection.UpdateSecret)
    assert update.new_secret == "token-2" and update.reason == "rotated"
    assert not updating.done()
    connection.data_received(_m(commands.Connection.UpdateSecretOk()))
    await updating
    assert connection.password == "token-2" and connection.is_open


async def test_the_broker_closing_the_connection_fails_every_channel() -> None:
    connection, transport = await _connected()
    channel = await _channel(connection, transport)
    qos = asyncio.create_task(channel.qos(1))
    await _flush()
    transport.sent()
    connection.data_received(_m(commands.Connection.Close(320, "CONNECTION_FORCED", 0, 0)))
    with pytest.raises(AMQPClosed) as closed:
        await qos
    assert closed.value.code == 320
    assert not channel.is_open and not connection.is_open
    await _flush()
    assert [type(m) for _, m in transport.sent()] == [commands.Connection.CloseOk]


async def test_a_broker_without_plain_login_is_refused_in_words() -> None:
    connection = ConsumerConnection("guest", "guest", "/", "test", heartbeat=0)
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(_m(commands.Connection.Start(mechanisms="EXTERNAL")))
    with pytest.raises(f.FrameError, match="no PLAIN login"):
        await connection.opened
