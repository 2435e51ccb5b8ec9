"""Trying a cluster's nodes in turn: the first that answers, from a rotating start."""

from __future__ import annotations

import pytest

from broker.connect import first_answering


async def test_a_node_that_does_not_answer_is_passed_over() -> None:
    tried: list[str] = []

    async def attempt(url: str) -> str:
        tried.append(url)
        if url == "amqp://down/":
            raise ConnectionRefusedError(url)
        return url

    for _ in range(4):
        assert await first_answering("amqp://down/,amqp://up/", attempt) == "amqp://up/"
    assert set(tried) == {"amqp://down/", "amqp://up/"}
    # The start rotates, so a fleet of processes spreads over the nodes.
    assert tried.count("amqp://up/") == 4 and 1 <= tried.count("amqp://down/") <= 3


async def test_when_no_node_answers_the_last_failure_is_raised() -> None:
    async def attempt(url: str) -> str:
        raise ConnectionRefusedError(url)

    with pytest.raises(ConnectionRefusedError):
        await first_answering("amqp://a/,amqp://b/", attempt)
