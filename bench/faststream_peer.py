"""A peer: FastStream subscribers on the same shards, as its users would write them.

    python -m bench.faststream_peer AMQP_URL TOPOLOGY_FILE TOTAL DOWNSTREAM[,...] [--inbox DB]

Each subscriber takes the event as its pydantic model (FastStream validates it) and is acked
after the handler returns. With `--inbox`, the handler first records the event in an inbox
table and commits (SQLite, WAL, one transaction per message): what a FastStream user writes
to apply each event once. Needs the `bench` extra (`pip install -e '.[bench]'`). Prints its
steady-window marks (`bench.measure.SelfMarks`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

from bench.measure import SelfMarks
from common.sqlite import sqlite_pragmas
from events import AnyEvent
from topology import names
from topology.spec import load_spec

_INBOX = """CREATE TABLE IF NOT EXISTS inbox (
    event_id TEXT PRIMARY KEY, order_id TEXT NOT NULL, seq INTEGER NOT NULL, event_type TEXT
)"""


def _inbox(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    sqlite_pragmas(db, None)
    db.execute(_INBOX)
    db.commit()
    return db


async def consume(
    amqp_url: str, file: Path, total: int, downstreams: list[str], inbox: Path | None
) -> SelfMarks:
    """Run the subscribers until `total` messages were handled."""
    from faststream import AckPolicy
    from faststream.rabbit import RabbitBroker, RabbitQueue
    from faststream.rabbit.schemas import Channel

    spec = load_spec(file)
    marks = SelfMarks(total)
    done = asyncio.get_running_loop().create_future()
    db = _inbox(inbox) if inbox else None
    broker = RabbitBroker(amqp_url, logger=None, log_level=logging.WARNING)

    async def handle(event: AnyEvent) -> None:
        if db is not None:
            db.execute(
                "INSERT OR IGNORE INTO inbox VALUES (?, ?, ?, ?)",
                (str(event.event_id), event.order_id, event.seq, event.event_type.value),
            )
            db.commit()
        if marks.hit() and not done.done():
            done.set_result(None)

    for d in downstreams:
        ds = spec.downstreams[d]
        for i in range(ds.shards):
            subscriber: Any = broker.subscriber(
                RabbitQueue(names.shard(d, i), declare=False),
                channel=Channel(prefetch_count=ds.prefetch),
                ack_policy=AckPolicy.ACK,
            )
            subscriber(handle)
    async with broker:
        await broker.start()
        await done
    return marks


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.faststream_peer", description=__doc__)
    parser.add_argument("amqp_url")
    parser.add_argument("file", type=Path)
    parser.add_argument("total", type=int)
    parser.add_argument("downstreams")
    parser.add_argument("--inbox", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(
        consume(args.amqp_url, args.file, args.total, args.downstreams.split(","), args.inbox)
    )
    print(result.report())
