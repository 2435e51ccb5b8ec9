"""AMQP 0-9-1 frames on the consume path: deliveries read straight from bytes, acks written.

A delivery is three frames (basic.deliver, a content header, body frames). pamqp decodes
every field of every frame generically, which costs a consumer about a third of its CPU;
these three frames, and the ack and nack a consumer sends, are decoded and built here with
`struct`. Every other frame goes through pamqp. The decoded values equal pamqp's (a unit
test compares them on random properties and headers).
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from typing import Any

from pamqp import decode

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
FRAME_HEAD = struct.Struct(">BHI")  # type, channel, payload size
METHOD_ID = struct.Struct(">HH")  # class, method
BASIC_DELIVER = (60, 60)
BASIC = 60
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_HEADER = struct.Struct(">HHQH")  # class, weight, body size, property flags
_ACK = struct.Struct(">BHIHHQBB")  # frame head, class, method, tag, bits, frame end
_ACK_SIZE = 13  # class + method + tag + bits
HEARTBEAT = bytes([FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END])


class FrameError(ValueError):
    """Bytes that are not a valid frame of the kind expected."""


def short_str(buf: bytes | bytearray, at: int) -> tuple[str, int]:
    """A shortstr at `at`: its value and the offset after it."""
    end = at + 1 + buf[at]
    return bytes(buf[at + 1 : end]).decode("utf-8"), end


def parse_deliver(buf: bytes | bytearray, at: int) -> tuple[str, int, bool, str, str]:
    """basic.deliver's arguments (after class and method ids): consumer tag, delivery tag,
    redelivered, exchange, routing key."""
    consumer_tag, at = short_str(buf, at)
    (tag,) = _U64.unpack_from(buf, at)
    redelivered = bool(buf[at + 8] & 1)
    exchange, at = short_str(buf, at + 9)
    routing_key, _ = short_str(buf, at)
    return consumer_tag, tag, redelivered, exchange, routing_key


class Properties:
    """The basic properties a consumer reads; the others are skipped."""

    __slots__ = ("app_id", "content_type", "headers", "message_id", "timestamp", "type")

    def __init__(self) -> None:
        self.content_type: str | None = None
        self.headers: dict[str, Any] | None = None
        self.message_id: str | None = None
        self.timestamp: datetime | None = None
        self.type: str | None = None
        self.app_id: str | None = None


def parse_header(buf: bytes | bytearray, at: int, end: int) -> tuple[int, Properties]:
    """A content header's payload from `at` to `end`: the body size and the properties."""
    class_id, _, body_size, flags = _HEADER.unpack_from(buf, at)
    if class_id != BASIC or flags & 1:
        raise FrameError(f"unsupported content header (class {class_id}, flags {flags:#x})")
    p = Properties()
    at += 14
    if flags & 0x8000:
        p.content_type, at = short_str(buf, at)
    if flags & 0x4000:  # content-encoding
        _, at = short_str(buf, at)
    if flags & 0x2000:
        p.headers, at = field_table(buf, at)
    at += bool(flags & 0x1000) + bool(flags & 0x0800)  # delivery-mode, priority: octets
    for bit in (0x0400, 0x0200, 0x0100):  # correlation-id, reply-to, expiration
        if flags & bit:
            _, at = short_str(buf, at)
    if flags & 0x0080:
        p.message_id, at = short_str(buf, at)
    if flags & 0x0040:
        (seconds,) = _U64.unpack_from(buf, at)
        at += 8
        # pamqp's reading: anything past the year 2106 is milliseconds.
        p.timestamp = datetime.fromtimestamp(
            seconds / 1000.0 if seconds > 0xFFFFFFFF else seconds, tz=UTC
        )
    if flags & 0x0020:
        p.type, at = short_str(buf, at)
    if flags & 0x0010:  # user-id
        _, at = short_str(buf, at)
    if flags & 0x0008:
        p.app_id, at = short_str(buf, at)
    if at > end:
        raise FrameError("content header longer than its frame")
    return body_size, p


_SIMPLE = {
    ord("b"): struct.Struct(">b"),
    ord("B"): struct.Struct(">B"),
    ord("s"): struct.Struct(">h"),
    ord("u"): struct.Struct(">H"),
    ord("I"): struct.Struct(">i"),
    ord("i"): struct.Struct(">I"),
    ord("l"): struct.Struct(">q"),
    ord("f"): struct.Struct(">f"),
    ord("d"): struct.Struct(">d"),
}
_U32 = struct.Struct(">I")


def field_table(buf: bytes | bytearray, at: int) -> tuple[dict[str, Any], int]:
    """A field table at `at`: the dict (as pamqp decodes it) and the offset after it.

    Strings, integers, floats and booleans are read here; a table holding anything else
    (a nested table, an array, a timestamp: x-death) is handed to pamqp whole.
    """
    (length,) = _U32.unpack_from(buf, at)
    start, end = at + 4, at + 4 + length
    if end > len(buf):
        raise FrameError("field table longer than its frame")
    out: dict[str, Any] = {}
    i = start
    while i < end:
        key_end = i + 1 + buf[i]
        key = bytes(buf[i + 1 : key_end]).decode("utf-8")
        kind = buf[key_end]
        i = key_end + 1
        if kind == 83:  # "S": longstr, text when it is UTF-8 (as pamqp)
            (size,) = _U32.unpack_from(buf, i)
            raw = bytes(buf[i + 4 : i + 4 + size])
            try:
                out[key] = raw.decode("utf-8")
            except UnicodeDecodeError:
                out[key] = raw
            i += 4 + size
        elif kind == 116:  # "t": boolean
            out[key] = bool(buf[i])
            i += 1
        elif (fmt := _SIMPLE.get(kind)) is not None:
            (out[key],) = fmt.unpack_from(buf, i)
            i += fmt.size
        else:
            used, table = decode.field_table(bytes(buf[at:end]))
            return table, at + used
    return out, end


def ack(channel: int, tag: int, multiple: bool = False) -> bytes:
    """A basic.ack frame."""
    return _ACK.pack(FRAME_METHOD, channel, _ACK_SIZE, BASIC, 80, tag, multiple, FRAME_END)


def nack(channel: int, tag: int, multiple: bool = False, requeue: bool = True) -> bytes:
    """A basic.nack frame (requeue by default)."""
    bits = multiple | requeue << 1
    return _ACK.pack(FRAME_METHOD, channel, _ACK_SIZE, BASIC, 120, tag, bits, FRAME_END)
