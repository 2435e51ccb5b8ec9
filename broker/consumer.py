"""A consume-only AMQP 0-9-1 connection: deliveries parsed in the protocol's callback.

aiormq reads a frame at a time through a stream, queues it for the channel, and starts a task
per delivery: for a consumer that does little per message, most of its CPU. Here the bytes the
socket delivers are parsed in `data_received` and each complete delivery is handed to the
consumer's callback synchronously; acks and nacks are written at once. Publishing is not done
here (the workers publish on an aio-pika connection beside this one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Callable
from functools import partial
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog
from pamqp import commands, frame
from pamqp.base import Frame
from pamqp.common import FieldTable
from pamqp.header import ProtocolHeader

from broker import frames as f
from broker.connect import CONNECT_TIMEOUT, connection_name, first_answering
from broker.received import Received
from common.settings import vhost_of

log = structlog.get_logger("broker.consumer")
OnDelivery = Callable[[Received], None]
OnCancel = Callable[[str], None]
_FRAME_MAX = 131_072
_CLOSE_TIMEOUT = 5.0
_CAPABILITIES = {
    "consumer_cancel_notify": True,  # the broker tells us when a queue we consume goes away
    "authentication_failure_close": True,  # refused credentials end as a readable close
    "basic.nack": True,
}


class AMQPClosed(ConnectionError):
    """The broker (or a failure) closed the connection or a channel."""

    def __init__(self, what: str, code: int | None = 0, text: str | None = "") -> None:
        self.code = code or 0
        self.text = text or ""
        super().__init__(f"{what} closed: {code} {text}".rstrip())


class ConsumerChannel:
    """One channel: prefetch, consumers with a synchronous callback, acks and nacks."""

    def __init__(self, connection: ConsumerConnection, number: int) -> None:
        self.connection = connection
        self.number = number
        self.consumers: dict[str, OnDelivery] = {}
        self.on_cancel: dict[str, OnCancel] = {}
        self.closed: asyncio.Future[Exception | None] = connection.loop.create_future()
        self._rpc: asyncio.Future[Frame] | None = None
        self._lock = asyncio.Lock()
        self._delivery: tuple[str, int, bool, str, str] | None = None
        self._properties: f.Properties | None = None
        self._left = 0
        self._chunks: list[bytes] = []

    @property
    def is_open(self) -> bool:
        """Whether frames can still be sent on it."""
        return not self.closed.done()

    async def qos(self, prefetch_count: int) -> None:
        """Unacked deliveries per consumer this channel may hold."""
        await self._call(commands.Basic.Qos(prefetch_count=prefetch_count))

    async def consume(
        self,
        queue: str,
        callback: OnDelivery,
        on_cancel: OnCancel | None = None,
        arguments: dict[str, Any] | None = None,
    ) -> str:
        """Start a consumer (manual acks); returns its tag. Deliveries reach `callback`."""
        tag = f"ctag-{os.getpid()}-{self.number}-{len(self.consumers) + 1}-{queue}"[:255]
        self.consumers[tag] = callback
        if on_cancel is not None:
            self.on_cancel[tag] = on_cancel
        ok = await self._call(
            commands.Basic.Consume(queue=queue, consumer_tag=tag, arguments=arguments or {})
        )
        assert isinstance(ok, commands.Basic.ConsumeOk)
        return tag

    async def cancel(self, tag: str) -> None:
        """Stop a consumer; deliveries already sent still reach its callback until then."""
        await self._call(commands.Basic.Cancel(consumer_tag=tag))
        self.consumers.pop(tag, None)
        self.on_cancel.pop(tag, None)

    def ack(self, tag: int, multiple: bool = False) -> None:
        """Acknowledge a delivery (and all before it with multiple)."""
        self._send(f.ack(self.number, tag, multiple))

    def nack(self, tag: int, requeue: bool = True) -> None:
        """Hand one delivery back to its queue (or drop it with requeue False)."""
        self._send(f.nack(self.number, tag, False, requeue))

    async def close(self) -> None:
        """Close the channel; the broker requeues what it holds unacked."""
        if self.is_open:
            with contextlib.suppress(AMQPClosed, TimeoutError):
                await asyncio.wait_for(
                    self._call(
                        commands.Channel.Close(
                            reply_code=200, reply_text="bye", class_id=0, method_id=0
                        )
                    ),
                    _CLOSE_TIMEOUT,
                )
        self._closed(None)

    def _send(self, data: bytes) -> None:
        if not self.is_open:
            raise AMQPClosed(f"channel {self.number}")
        self.connection.write(data)

    async def _call(self, method: Frame) -> Frame:
        """Send a synchronous method and wait for its reply (one at a time per channel)."""
        async with self._lock:
            if not self.is_open:
                raise AMQPClosed(f"channel {self.number}")
            self._rpc = self.connection.loop.create_future()
            self.connection.write(frame.marshal(method, self.number))
            try:
                return await self._rpc
            finally:
                self._rpc = None

    # --- frames from the connection ------------------------------------------------

    def on_method(self, method: Frame) -> None:
        """A method frame other than basic.deliver."""
        if isinstance(method, commands.Channel.Close):
            self.connection.write(frame.marshal(commands.Channel.CloseOk(), self.number))
            self._closed(AMQPClosed(f"channel {self.number}", method.reply_code, method.reply_text))
        elif isinstance(method, commands.Basic.Cancel):  # the broker cancelled a consumer
            tag = str(method.consumer_tag or "")
            self.consumers.pop(tag, None)
            on_cancel = self.on_cancel.pop(tag, None)
            if not method.nowait:
                self.connection.write(frame.marshal(commands.Basic.CancelOk(tag), self.number))
            if on_cancel is not None:
                on_cancel(tag)
        elif isinstance(method, commands.Channel.Flow):
            flow_ok = commands.Channel.FlowOk(method.active)
            self.connection.write(frame.marshal(flow_ok, self.number))
        elif self._rpc is not None and not self._rpc.done():
            self._rpc.set_result(method)
            if isinstance(method, commands.Channel.CloseOk):
                self._closed(None)

    def on_deliver(self, delivery: tuple[str, int, bool, str, str]) -> None:
        """basic.deliver: a content header and body frames follow."""
        self._delivery = delivery

    def on_header(self, body_size: int, properties: f.Properties) -> None:
        """The delivery's properties."""
        self._properties, self._left, self._chunks = properties, body_size, []
        if body_size == 0:
            self._complete(b"")

    def on_body(self, chunk: bytes) -> None:
        """A part of the delivery's body."""
        self._left -= len(chunk)
        if self._left > 0:
            self._chunks.append(chunk)
        else:
            self._chunks.append(chunk)
            self._complete(chunk if len(self._chunks) == 1 else b"".join(self._chunks))

    def _complete(self, body: bytes) -> None:
        delivery, properties = self._delivery, self._properties
        self._delivery, self._properties, self._chunks = None, None, []
        if delivery is None or properties is None:
            raise f.FrameError("content without a basic.deliver")
        consumer_tag, tag, redelivered, _, routing_key = delivery
        callback = self.consumers.get(consumer_tag)
        if callback is None:  # cancelled meanwhile: it goes back when the channel closes
            return
        callback(Received.of(body, properties, tag, redelivered, routing_key))

    def _closed(self, error: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(error)
        if self._rpc is not None and not self._rpc.done():
            self._rpc.set_exception(error or AMQPClosed(f"channel {self.number}"))
        self.connection.channels.pop(self.number, None)


class ConsumerConnection(asyncio.Protocol):
    """The protocol: handshake, heartbeats, frame parsing, and the channels' frames."""

    def __init__(self, user: str, password: str, vhost: str, name: str, heartbeat: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.user, self.password, self.vhost, self.name = user, password, vhost, name
        self.heartbeat = heartbeat
        self.channels: dict[int, ConsumerChannel] = {}
        self.opened: asyncio.Future[None] = self.loop.create_future()
        self.closed: asyncio.Future[Exception | None] = self.loop.create_future()
        self.frame_max = _FRAME_MAX
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._next_channel = 1
        self._last_rx = self.loop.time()
        self._beat: asyncio.TimerHandle | None = None

    # --- public --------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the connection is up."""
        return not self.closed.done()

    async def channel(self) -> ConsumerChannel:
        """Open a new channel."""
        number, self._next_channel = self._next_channel, self._next_channel + 1
        channel = self.channels[number] = ConsumerChannel(self, number)
        await channel._call(commands.Channel.Open())
        return channel

    async def close(self) -> None:
        """Close the connection (the broker requeues every unacked delivery)."""
        if self.is_open and self._transport is not None:
            self.write(frame.marshal(commands.Connection.Close(200, "bye", 0, 0), 0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.closed), _CLOSE_TIMEOUT)
        if self._transport is not None:
            self._transport.close()

    def write(self, data: bytes) -> None:
        """Send bytes: frames written in one pass of the event loop go out in one write."""
        if self._transport is None or not self.is_open:
            raise AMQPClosed("connection")
        self._out.append(data)
        if len(self._out) == 1:
            self.loop.call_soon(self._write_out)

    def _write_out(self) -> None:
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out))
        self._out.clear()

    # --- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Send the protocol header; the broker starts the handshake."""
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport.write(frame.marshal(ProtocolHeader(), 0))

    def connection_lost(self, exc: Exception | None) -> None:
        """Everything on this connection is over."""
        self._fail(exc if exc is not None else AMQPClosed("connection", 320, "CONNECTION_LOST"))

    def data_received(self, data: bytes) -> None:
        """Parse every complete frame; hand each complete delivery to its consumer."""
        self._last_rx = self.loop.time()
        buffer = self._buffer
        buffer += data
        at, size = 0, len(buffer)
        try:
            while size - at >= 8:
                kind, number, length = f.FRAME_HEAD.unpack_from(buffer, at)
                end = at + 7 + length
                if end >= size:
                    break
                if buffer[end] != f.FRAME_END or length > self.frame_max:
                    raise f.FrameError(f"bad frame (type {kind}, size {length})")
                # Frames for a channel closed meanwhile (in flight before its close) are dropped.
                channel = self.channels.get(number)
                if kind == f.FRAME_METHOD:
                    if f.METHOD_ID.unpack_from(buffer, at + 7) != f.BASIC_DELIVER:
                        self._on_method(number, bytes(buffer[at : end + 1]))
                    elif channel is not None:
                        channel.on_deliver(f.parse_deliver(buffer, at + 11))
                elif kind == f.FRAME_HEADER:
                    if channel is not None:
                        channel.on_header(*f.parse_header(buffer, at + 7, end))
                elif kind == f.FRAME_BODY:
                    if channel is not None:
                        channel.on_body(bytes(buffer[at + 7 : end]))
                elif kind != f.FRAME_HEARTBEAT:
                    raise f.FrameError(f"unknown frame type {kind}")
                at = end + 1
        except Exception as exc:
            log.error("consumer.protocol_error", connection=self.name, error=repr(exc))
            self._fail(exc)
            if self._transport is not None:
                self._transport.abort()
            return
        finally:
            del buffer[:at]

    # --- the connection's own frames -------------------------------------------------

    def _on_method(self, number: int, data: bytes) -> None:
        _, _, method = frame.unmarshal(data)
        if number:
            channel = self.channels.get(number)
            if channel is not None and isinstance(method, Frame):
                channel.on_method(method)
            return
        if isinstance(method, commands.Connection.Start):
            self.write(frame.marshal(self._start_ok(), 0))
        elif isinstance(method, commands.Connection.Tune):
            self._tune(method)
        elif isinstance(method, commands.Connection.OpenOk):
            if not self.opened.done():
                self.opened.set_result(None)
        elif isinstance(method, commands.Connection.Close):
            self.write(frame.marshal(commands.Connection.CloseOk(), 0))
            self._fail(AMQPClosed("connection", method.reply_code, method.reply_text))
        elif isinstance(method, commands.Connection.CloseOk):
            self._fail(AMQPClosed("connection", 200, "closed by the client"))
            if self._transport is not None:
                self._transport.close()

    def _start_ok(self) -> commands.Connection.StartOk:
        properties: FieldTable = {
            "product": "order-event-bus",
            "connection_name": self.name,
            "capabilities": cast(FieldTable, _CAPABILITIES),
        }
        response = f"\0{self.user}\0{self.password}"
        return commands.Connection.StartOk(properties, "PLAIN", response, "en_US")

    def _tune(self, tune: commands.Connection.Tune) -> None:
        self.frame_max = min(tune.frame_max or _FRAME_MAX, _FRAME_MAX)
        offered = tune.heartbeat
        self.heartbeat = min(offered, self.heartbeat) if offered and self.heartbeat else 0
        tune_ok = commands.Connection.TuneOk(tune.channel_max, self.frame_max, self.heartbeat)
        self.write(frame.marshal(tune_ok, 0))
        self.write(frame.marshal(commands.Connection.Open(virtual_host=self.vhost), 0))
        if self.heartbeat:
            self._beat = self.loop.call_later(self.heartbeat / 2, self._heartbeat)

    def _heartbeat(self) -> None:
        """Send one, and give up on a broker that sent nothing for two intervals."""
        if not self.is_open or self._transport is None:
            return
        if self.loop.time() - self._last_rx > 2 * self.heartbeat:
            log.warning("consumer.heartbeat_missed", connection=self.name)
            self._fail(AMQPClosed("connection", 0, "missed heartbeats"))
            self._transport.abort()
            return
        self._transport.write(f.HEARTBEAT)
        self._beat = self.loop.call_later(self.heartbeat / 2, self._heartbeat)

    def _fail(self, error: Exception) -> None:
        if self._beat is not None:
            self._beat.cancel()
        if not self.opened.done():
            self.opened.set_exception(error)
        if not self.closed.done():
            self.closed.set_result(error)
        for channel in list(self.channels.values()):
            channel._closed(error)


def _ssl_context(query: dict[str, str]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=query.get("cafile"))
    if certfile := query.get("certfile"):
        context.load_cert_chain(certfile, query.get("keyfile"))
    return context


async def open_consumer(amqp_url: str, role: str) -> ConsumerConnection:
    """Connect to the first node of `amqp_url` that answers (amqp:// or amqps:// with the
    URL's cafile/certfile/keyfile) and log in."""
    return await first_answering(amqp_url, partial(_open, role=role))


async def _open(amqp_url: str, role: str) -> ConsumerConnection:
    name = connection_name(role)
    parts = urlsplit(amqp_url)
    query = dict(parse_qsl(parts.query))
    tls = parts.scheme == "amqps"
    host = parts.hostname or "localhost"
    loop = asyncio.get_running_loop()
    context = await loop.run_in_executor(None, _ssl_context, query) if tls else None

    def protocol() -> ConsumerConnection:
        return ConsumerConnection(
            unquote(parts.username or "guest"),
            unquote(parts.password or "guest"),
            vhost_of(amqp_url),
            name,
            int(query.get("heartbeat", "60")),
        )

    _, connection = await asyncio.wait_for(
        loop.create_connection(
            protocol,
            host,
            parts.port or (5671 if tls else 5672),
            ssl=context,
            server_hostname=host if tls else None,
        ),
        CONNECT_TIMEOUT,
    )
    try:
        await asyncio.wait_for(asyncio.shield(connection.opened), CONNECT_TIMEOUT)
    except BaseException:
        await connection.close()
        raise
    return connection
