"""Connecting to the broker: a named aio-pika connection to the first node that answers."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aio_pika
import aiormq
from aio_pika.abc import AbstractConnection
from aio_pika.exceptions import AMQPError
from pamqp.common import FieldTable

from common.settings import addresses

CONNECT_TIMEOUT = 10.0
# aiormq queues a connection's outgoing frames in a queue of 10, and a publish waits for room
# while it holds its channel's lock: past 10 publishes in one pass of the event loop, each
# waiting publish then gets the lock a pass later (a worker's burst of dead letters waited
# 0.5 s for it where the broker confirmed in 20 ms). Publishes that wait for their write
# (aiormq's default) still wait for the socket to drain.
FRAME_QUEUE = 4096
aiormq.Connection.FRAME_BUFFER_SIZE = FRAME_QUEUE


def connection_name(role: str) -> str:
    """`<role>:<pid>`: what the management UI and operators see of a connection."""
    return f"{role}:{os.getpid()}"


async def connect(amqp_url: str, role: str) -> AbstractConnection:
    """Open an aio-pika connection named after its role and process, to the first node of
    `amqp_url` (a comma-separated list for a cluster) that answers."""
    properties: FieldTable = {"connection_name": connection_name(role)}

    async def attempt(url: str) -> AbstractConnection:
        return await aio_pika.connect(url, timeout=CONNECT_TIMEOUT, client_properties=properties)

    return await first_answering(amqp_url, attempt)


T = TypeVar("T")
_turn = itertools.count(os.getpid())  # where the next attempt starts in a list of nodes


async def first_answering(urls: str, attempt: Callable[[str], Awaitable[T]]) -> T:
    """`attempt` on each node of a comma-separated list in turn, from a rotating start (so a
    fleet spreads over the nodes); the first that succeeds, or the last failure."""
    nodes = addresses(urls)
    start = next(_turn) % len(nodes)
    error: BaseException | None = None
    for url in nodes[start:] + nodes[:start]:
        try:
            return await attempt(url)
        except (OSError, AMQPError, TimeoutError, ConnectionError) as exc:
            error = exc
    assert error is not None
    raise error
