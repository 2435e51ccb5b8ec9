"""The tables every downstream store has beside its handler's: inbox, progress, waiting, leases."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, MetaData, String, Table, Text


def inbox_table(metadata: MetaData) -> Table:
    """inbox(event_id pk, order_id, seq, event_type, applied_at_us): applied events, in order."""
    return Table(
        "inbox",
        metadata,
        Column("event_id", String(36), primary_key=True),
        Column("order_id", String(64), nullable=False, index=True),
        Column("seq", Integer, nullable=False),
        Column("event_type", String(32), nullable=False),
        Column("applied_at_us", BigInteger, nullable=False),
    )


def progress_table(metadata: MetaData) -> Table:
    """order_progress(order_id pk, last_seq, parked_event_id)."""
    return Table(
        "order_progress",
        metadata,
        Column("order_id", String(64), primary_key=True),
        Column("last_seq", Integer, nullable=False),
        Column("parked_event_id", String(36), nullable=True),
    )


def waiting_table(metadata: MetaData) -> Table:
    """waiting(event_id pk, order_id, seq, shard, the message, since, expiry): events that
    arrived before their predecessor, held until it is applied or the deferral bound passes."""
    return Table(
        "waiting",
        metadata,
        Column("event_id", String(36), primary_key=True),
        Column("order_id", String(64), nullable=False, index=True),
        Column("seq", Integer, nullable=False),
        Column("shard", String(255), nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("headers", Text, nullable=False),
        Column("message_type", String(64), nullable=True),
        Column("content_type", String(64), nullable=True),
        Column("timestamp_us", BigInteger, nullable=True),
        Column("app_id", String(200), nullable=True),
        Column("since_ms", BigInteger, nullable=False),
        Column("expires_at_ms", BigInteger, nullable=False),
    )


def lease_tables(metadata: MetaData) -> None:
    """shard_members, shard_leases and shard_lease_log, in every downstream's store."""
    Table(
        "shard_members",
        metadata,
        Column("member", String(200), primary_key=True),
        Column("joined_at_ms", BigInteger, nullable=False),
        Column("seen_at_ms", BigInteger, nullable=False),
    )
    Table(
        "shard_leases",
        metadata,
        Column("shard", Integer, primary_key=True, autoincrement=False),
        Column("owner", String(200), nullable=True),
        Column("epoch", Integer, nullable=False),
        Column("expires_at_ms", BigInteger, nullable=False),
    )
    Table(
        "shard_lease_log",
        metadata,
        Column("shard", Integer, primary_key=True, autoincrement=False),
        Column("epoch", Integer, primary_key=True),
        Column("owner", String(200), nullable=False),
        Column("acquired_at_ms", BigInteger, nullable=False),
        Column("released_at_ms", BigInteger, nullable=True),
    )


def store_tables(metadata: MetaData) -> None:
    """The tables every store has beside its handler's: the inbox, progress, waiting events
    and shard leases."""
    inbox_table(metadata)
    progress_table(metadata)
    waiting_table(metadata)
    lease_tables(metadata)


def _bus_table_names() -> frozenset[str]:
    metadata = MetaData()
    store_tables(metadata)
    return frozenset(metadata.tables)


BUS_TABLES = _bus_table_names()


def handler_tables(metadata: MetaData) -> list[Table]:
    """A store's tables that are its handler's, not the bus's."""
    return [t for name, t in metadata.tables.items() if name not in BUS_TABLES]
