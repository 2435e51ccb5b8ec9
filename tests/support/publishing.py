"""A fake confirmed publisher (`workers.session.publisher`) for unit tests."""

from __future__ import annotations

import aio_pika

from workers.applying.policy import now_ms


class Publisher:
    """Answers each publish with the next outcome (None: confirmed); records what went out."""

    def __init__(self, *outcomes: BaseException | None) -> None:
        self.outcomes = list(outcomes)
        self.published: list[tuple[str, aio_pika.Message, float]] = []
        self.routing_keys: list[str] = []

    async def publish(self, exchange: str, message: aio_pika.Message, routing_key: str) -> None:
        """Record the publish; raise its outcome when it is one."""
        self.published.append((exchange, message, now_ms()))
        self.routing_keys.append(routing_key)
        if (outcome := self.outcomes.pop(0)) is not None:
            raise outcome

    async def renew(self) -> None:
        """Nothing to renew."""
