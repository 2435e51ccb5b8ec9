"""A consume-only AMQP 0-9-1 connection: deliveries parsed in the protocol's callback.

aiormq reads a frame at a time through a stream, queues it for the channel, and starts a task
per delivery: for a consumer that does little per message, most of its CPU. Here the bytes the
socket delivers are parsed in `data_received` and each complete delivery is handed to the
consumer's callback synchronously; acks and nacks are written at once. Publishing is not done
here (the workers publish on an aio-pika connection beside this one).

It speaks the consumer's part of the protocol and treats the rest as the protocol says: channel
numbers are reused within the negotiated `channel_max`; each reply must be one its request
allows; `connection.blocked`/`unblocked` are tracked (the broker blocks a connection that
publishes during a resource alarm: this one only acks, but its owner is told); a new secret
(an expiring token) is sent with `update_secret`; a broker silent for two heartbeat intervals
ends the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from functools import partial
from typing import cast
from urllib.parse import parse_qsl, unquote, urlsplit

import structlog
from pamqp import commands, frame
from pamqp.base import Frame
from pamqp.common import FieldTable
from pamqp.header import ProtocolHeader

from broker import frames as f
from broker.channel import AMQPClosed, ConsumerChannel, OnCancel, OnDelivery, Rpc, UnexpectedFrame
from broker.connect import CONNECT_TIMEOUT, connection_name, first_answering
from common.settings import vhost_of

log = structlog.get_logger("broker.consumer")
_FRAME_MAX = 131_072
_CHANNEL_MAX = 65_535  # what channel_max 0 ("no limit") means on the wire
_CLOSE_TIMEOUT = 5.0
_CAPABILITIES = {
    "consumer_cancel_notify": True,  # the broker tells us when a queue we consume goes away
    "authentication_failure_close": True,  # refused credentials end as a readable close
    "basic.nack": True,
    "connection.blocked": True,  # the broker says when a resource alarm blocks publishers
}
__all__ = ["AMQPClosed", "ConsumerChannel", "ConsumerConnection", "OnCancel", "OnDelivery"]


class ChannelsExhausted(ConnectionError):
    """Every channel number the broker allows is in use."""


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
        self.channel_max = _CHANNEL_MAX
        self.blocked: str | None = None  # the broker's reason while it blocks this connection
        self.on_blocked: list[Callable[[str | None], None]] = []  # told of each change
        self._retired: set[int] = set()  # closed without the broker's confirmation
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._rpc: Rpc | None = None  # a connection-level request (update-secret)
        self._last_rx = self.loop.time()
        self._beat: asyncio.TimerHandle | None = None

    # --- public --------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Whether the connection is up."""
        return not self.closed.done()

    async def channel(self) -> ConsumerChannel:
        """Open a new channel, on the lowest channel number free."""
        if not self.is_open:
            raise AMQPClosed("connection")
        taken = self.channels.keys() | self._retired
        number = next((n for n in range(1, self.channel_max + 1) if n not in taken), None)
        if number is None:
            raise ChannelsExhausted(
                f"all {self.channel_max} channels the broker allows are in use on {self.name}"
            )
        channel = self.channels[number] = ConsumerChannel(self, number)
        await channel.open()
        return channel

    def release(self, channel: ConsumerChannel, reusable: bool) -> None:
        """A channel has closed: its number is free again, unless its close went unconfirmed."""
        if self.channels.get(channel.number) is channel:
            del self.channels[channel.number]
            if not reusable:
                self._retired.add(channel.number)

    async def update_secret(self, secret: str, reason: str = "refresh") -> None:
        """Give the broker a new secret for this connection (an OAuth 2 token about to expire);
        returns once the broker accepted it (a refusal closes the connection)."""
        if self._rpc is not None:
            raise RuntimeError("an update-secret is already waiting for its reply")
        request = commands.Connection.UpdateSecret(secret, reason)
        rpc = self._rpc = Rpc(request, self.loop.create_future())
        self.write(frame.marshal(request, 0))
        try:
            await rpc.future
        finally:
            self._rpc = None
        self.password = secret

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
            if isinstance(exc, UnexpectedFrame) and self.is_open and self._transport is not None:
                # Say why before going: the broker logs it against this connection.
                with contextlib.suppress(Exception):
                    close = commands.Connection.Close(505, f"UNEXPECTED_FRAME - {exc}"[:255], 0, 0)
                    self._transport.write(frame.marshal(close, 0))
            self._fail(exc)
            if self._transport is not None:
                self._transport.abort()
            return
        finally:
            del buffer[:at]

    # --- the connection's own frames -------------------------------------------------

    def _on_method(self, number: int, data: bytes) -> None:
        _, _, method = frame.unmarshal(data)
        if not isinstance(method, Frame):
            raise f.FrameError(f"not a method frame on channel {number}")
        if number:
            channel = self.channels.get(number)
            if channel is not None:
                channel.on_method(method)
            return
        if isinstance(method, commands.Connection.Start):
            self._start(method)
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
        elif isinstance(method, commands.Connection.Blocked | commands.Connection.Unblocked):
            self._set_blocked(
                (method.reason or "blocked")
                if isinstance(method, commands.Connection.Blocked)
                else None
            )
        elif self._rpc is not None and not self._rpc.future.done():
            self._rpc.answer(method)
        else:
            raise UnexpectedFrame(f"{method.name} on the connection with no request")

    def _start(self, start: commands.Connection.Start) -> None:
        if "PLAIN" not in str(start.mechanisms).split():
            raise f.FrameError(f"the broker offers no PLAIN login (only {start.mechanisms})")
        properties: FieldTable = {
            "product": "order-event-bus",
            "connection_name": self.name,
            "capabilities": cast(FieldTable, _CAPABILITIES),
        }
        response = f"\0{self.user}\0{self.password}"
        start_ok = commands.Connection.StartOk(properties, "PLAIN", response, "en_US")
        self.write(frame.marshal(start_ok, 0))

    def _tune(self, tune: commands.Connection.Tune) -> None:
        self.frame_max = min(tune.frame_max or _FRAME_MAX, _FRAME_MAX)
        self.channel_max = tune.channel_max or _CHANNEL_MAX
        offered = tune.heartbeat
        self.heartbeat = min(offered, self.heartbeat) if offered and self.heartbeat else 0
        tune_ok = commands.Connection.TuneOk(self.channel_max, self.frame_max, self.heartbeat)
        self.write(frame.marshal(tune_ok, 0))
        self.write(frame.marshal(commands.Connection.Open(virtual_host=self.vhost), 0))
        if self.heartbeat:
            self._beat = self.loop.call_later(self.heartbeat / 2, self._heartbeat)

    def _set_blocked(self, reason: str | None) -> None:
        self.blocked = reason
        if reason is None:
            log.info("consumer.unblocked", connection=self.name)
        else:
            log.warning("consumer.blocked", connection=self.name, reason=reason)
        for tell in list(self.on_blocked):
            tell(reason)

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
        if self._rpc is not None and not self._rpc.future.done():
            self._rpc.future.set_exception(error)
        for channel in list(self.channels.values()):
            channel._closed(error, reusable=True)


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
