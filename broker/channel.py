"""One channel of the consume-only connection: prefetch, consumers, acks, and its RPCs.

A synchronous method waits for its reply, one at a time per channel, and the reply must be
one the request allows (pamqp's `valid_responses`): anything else is a protocol error that
ends the connection, never a reply taken for another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pamqp import commands, frame
from pamqp.base import Frame

from broker import frames as f
from broker.received import Received

if TYPE_CHECKING:
    from broker.consumer import ConsumerConnection

OnDelivery = Callable[[Received], None]
OnCancel = Callable[[str], None]
CLOSE_TIMEOUT = 5.0


class AMQPClosed(ConnectionError):
    """The broker (or a failure) closed the connection or a channel."""

    def __init__(self, what: str, code: int | None = 0, text: str | None = "") -> None:
        self.code = code or 0
        self.text = text or ""
        super().__init__(f"{what} closed: {code} {text}".rstrip())


class UnexpectedFrame(f.FrameError):
    """A reply that the request it answers does not allow (AMQP's 505 UNEXPECTED_FRAME)."""


class Rpc:
    """A synchronous request waiting for its reply."""

    __slots__ = ("future", "request")

    def __init__(self, request: Frame, future: asyncio.Future[Frame]) -> None:
        self.request = request
        self.future = future

    def answer(self, reply: Frame) -> None:
        """Resolve it with a reply the request allows; raise UnexpectedFrame otherwise."""
        allowed = getattr(self.request, "valid_responses", ())
        if reply.name not in allowed:
            raise UnexpectedFrame(
                f"{reply.name} in reply to {self.request.name} (expected {', '.join(allowed)})"
            )
        if not self.future.done():
            self.future.set_result(reply)


class ConsumerChannel:
    """One channel: prefetch, consumers with a synchronous callback, acks and nacks."""

    def __init__(self, connection: ConsumerConnection, number: int) -> None:
        self.connection = connection
        self.number = number
        self.consumers: dict[str, OnDelivery] = {}
        self.on_cancel: dict[str, OnCancel] = {}
        self.closed: asyncio.Future[Exception | None] = connection.loop.create_future()
        self._rpc: Rpc | None = None
        self._lock = asyncio.Lock()
        self._delivery: tuple[str, int, bool, str, str] | None = None
        self._properties: f.Properties | None = None
        self._left = 0
        self._chunks: list[bytes] = []
        self._consumers_started = 0

    @property
    def is_open(self) -> bool:
        """Whether frames can still be sent on it."""
        return not self.closed.done()

    async def open(self) -> None:
        """Open it on the broker."""
        await self._call(commands.Channel.Open())

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
        self._consumers_started += 1
        tag = f"ctag-{os.getpid()}-{self.number}-{self._consumers_started}-{queue}"[:255]
        self.consumers[tag] = callback
        if on_cancel is not None:
            self.on_cancel[tag] = on_cancel
        try:
            await self._call(
                commands.Basic.Consume(queue=queue, consumer_tag=tag, arguments=arguments or {})
            )
        except BaseException:
            self.consumers.pop(tag, None)
            self.on_cancel.pop(tag, None)
            raise
        return tag

    async def cancel(self, tag: str) -> None:
        """Stop a consumer. Deliveries the broker dispatched before it read the cancel can
        arrive after its reply (a quorum queue forwards them late): they still reach the
        callback, until the channel closes, so that whoever cancelled can finish them."""
        await self._call(commands.Basic.Cancel(consumer_tag=tag))
        self.on_cancel.pop(tag, None)

    def ack(self, tag: int, multiple: bool = False) -> None:
        """Acknowledge a delivery (and all before it with multiple)."""
        self._send(f.ack(self.number, tag, multiple))

    def nack(self, tag: int, requeue: bool = True) -> None:
        """Hand one delivery back to its queue (or drop it with requeue False)."""
        self._send(f.nack(self.number, tag, False, requeue))

    async def close(self) -> None:
        """Close the channel; the broker requeues what it holds unacked.

        Its number is free for a new channel once the broker confirmed the close; a close
        the broker never confirmed keeps the number out of use on this connection.
        """
        confirmed = not self.is_open
        if self.is_open:
            with contextlib.suppress(AMQPClosed, TimeoutError):
                await asyncio.wait_for(
                    self._call(
                        commands.Channel.Close(
                            reply_code=200, reply_text="bye", class_id=0, method_id=0
                        )
                    ),
                    CLOSE_TIMEOUT,
                )
                confirmed = True
        self._closed(None, reusable=confirmed)

    def _send(self, data: bytes) -> None:
        if not self.is_open:
            raise AMQPClosed(f"channel {self.number}")
        self.connection.write(data)

    async def _call(self, method: Frame) -> Frame:
        """Send a synchronous method and wait for its reply (one at a time per channel)."""
        async with self._lock:
            if not self.is_open:
                raise AMQPClosed(f"channel {self.number}")
            rpc = self._rpc = Rpc(method, self.connection.loop.create_future())
            self.connection.write(frame.marshal(method, self.number))
            try:
                return await rpc.future
            finally:
                self._rpc = None

    # --- frames from the connection ------------------------------------------------

    def on_method(self, method: Frame) -> None:
        """A method frame other than basic.deliver (UnexpectedFrame: a protocol error)."""
        if isinstance(method, commands.Channel.Close):
            self.connection.write(frame.marshal(commands.Channel.CloseOk(), self.number))
            error = AMQPClosed(f"channel {self.number}", method.reply_code, method.reply_text)
            self._closed(error, reusable=True)
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
        elif self._rpc is not None and not self._rpc.future.done():
            self._rpc.answer(method)
        else:
            raise UnexpectedFrame(f"{method.name} on channel {self.number} with no request")

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
        self._chunks.append(chunk)
        if self._left <= 0:
            self._complete(chunk if len(self._chunks) == 1 else b"".join(self._chunks))

    def _complete(self, body: bytes) -> None:
        delivery, properties = self._delivery, self._properties
        self._delivery, self._properties, self._chunks = None, None, []
        if delivery is None or properties is None:
            raise f.FrameError("content without a basic.deliver")
        consumer_tag, tag, redelivered, _, routing_key = delivery
        callback = self.consumers.get(consumer_tag)
        if callback is None:  # cancelled by the broker: it goes back when the channel closes
            return
        callback(Received.of(body, properties, tag, redelivered, routing_key))

    def _closed(self, error: Exception | None, reusable: bool) -> None:
        if not self.closed.done():
            self.closed.set_result(error)
        if self._rpc is not None and not self._rpc.future.done():
            self._rpc.future.set_exception(error or AMQPClosed(f"channel {self.number}"))
        self.connection.release(self, reusable)
