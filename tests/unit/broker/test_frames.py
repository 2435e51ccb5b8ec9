"""The consume path's own frame reading and writing equals pamqp's, on random properties."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, frame
from pamqp.header import ContentHeader

from broker import frames as f

short = st.text(min_size=0, max_size=40)
int64 = st.integers(-(2**63), 2**63 - 1)
# What an AMQP field table carries (pamqp encodes ints by their size, texts as longstr).
simple_values = st.one_of(
    st.booleans(),
    int64,
    st.text(max_size=60),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
)
nested_values = st.one_of(
    simple_values,
    st.dictionaries(st.text(max_size=8), st.integers(-1000, 1000), max_size=3),
    st.lists(st.integers(-1000, 1000), max_size=3),
    st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.replace(microsecond=0)),
)
headers = st.dictionaries(st.text(min_size=1, max_size=20), simple_values, max_size=6)
rich_headers = st.dictionaries(st.text(min_size=1, max_size=20), nested_values, max_size=6)


def _properties(**given: Any) -> commands.Basic.Properties:
    return commands.Basic.Properties(**given)


@settings(max_examples=300, deadline=None)
@given(
    content_type=st.none() | short,
    message_id=st.none() | short,
    type_=st.none() | short,
    app_id=st.none() | short,
    correlation_id=st.none() | short,
    table=st.none() | headers | rich_headers,
    delivery_mode=st.none() | st.sampled_from([1, 2]),
    stamp=st.none() | st.integers(0, 2**32 - 1),
    body_size=st.integers(0, 2**40),
)
def test_a_content_header_reads_as_pamqp_reads_it(
    content_type: str | None,
    message_id: str | None,
    type_: str | None,
    app_id: str | None,
    correlation_id: str | None,
    table: dict[str, Any] | None,
    delivery_mode: int | None,
    stamp: int | None,
    body_size: int,
) -> None:
    props = _properties(
        content_type=content_type,
        message_id=message_id,
        message_type=type_,
        app_id=app_id,
        correlation_id=correlation_id,
        headers=table,
        delivery_mode=delivery_mode,
        timestamp=datetime.fromtimestamp(stamp, tz=UTC) if stamp is not None else None,
    )
    raw = frame.marshal(ContentHeader(0, body_size, props), 1)
    _, _, expected = frame.unmarshal(raw)
    assert isinstance(expected, ContentHeader)
    size, mine = f.parse_header(raw, 7, len(raw) - 1)
    assert size == expected.body_size == body_size
    want = expected.properties
    assert (mine.content_type, mine.message_id, mine.type, mine.app_id) == (
        want.content_type,
        want.message_id,
        want.message_type,
        want.app_id,
    )
    assert mine.timestamp == want.timestamp
    assert mine.headers == want.headers


@settings(max_examples=200, deadline=None)
@given(tag=st.integers(1, 2**63 - 1), redelivered=st.booleans(), ctag=short, rk=short, ex=short)
def test_a_deliver_reads_as_pamqp_reads_it(
    tag: int, redelivered: bool, ctag: str, rk: str, ex: str
) -> None:
    raw = frame.marshal(
        commands.Basic.Deliver(ctag, tag, redelivered, "amq.direct" if not ex else "x", rk), 3
    )
    _, channel, expected = frame.unmarshal(raw)
    assert isinstance(expected, commands.Basic.Deliver) and channel == 3
    assert f.METHOD_ID.unpack_from(raw, 7) == f.BASIC_DELIVER
    mine = f.parse_deliver(raw, 11)
    assert mine == (
        expected.consumer_tag,
        expected.delivery_tag,
        expected.redelivered,
        expected.exchange,
        expected.routing_key,
    )


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (f.ack(5, 42, multiple=True), commands.Basic.Ack(42, True)),
        (f.ack(1, 7), commands.Basic.Ack(7, False)),
        (f.nack(2, 9), commands.Basic.Nack(9, False, True)),
        (f.nack(2, 9, requeue=False), commands.Basic.Nack(9, False, False)),
    ],
)
def test_acks_and_nacks_are_the_frames_pamqp_would_write(built: bytes, expected: Any) -> None:
    channel = f.FRAME_HEAD.unpack_from(built)[1]
    assert built == frame.marshal(expected, channel)


def test_a_header_that_claims_more_than_its_frame_is_refused() -> None:
    props = _properties(message_id="m" * 30)
    raw = frame.marshal(ContentHeader(0, 10, props), 1)
    with pytest.raises((f.FrameError, IndexError, ValueError)):
        f.parse_header(raw[:-12], 7, len(raw) - 13)
