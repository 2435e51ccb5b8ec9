"""A handler call past its downstream's handler_timeout fails as retryable; the handler's own
TimeoutError is its own; without a limit nothing is cut short."""

from __future__ import annotations

import asyncio

import pytest

from topology.spec import DownstreamSpec
from workers.errors import HandlerTimeout, TransientError, within
from workers.policy import Retry, on_failure


async def test_a_hung_call_fails_as_a_retryable_handler_timeout() -> None:
    hung = asyncio.Event()
    with pytest.raises(HandlerTimeout, match=r"handler ran past the handler_timeout of 0\.05 s"):
        await within(0.05, hung.wait(), "handler")
    assert issubclass(HandlerTimeout, TransientError)


async def test_the_handlers_own_timeout_error_is_not_called_ours() -> None:
    async def own() -> None:
        raise TimeoutError("the payment service did not answer")

    with pytest.raises(TimeoutError, match="payment service") as caught:
        await within(5, own(), "handler")
    assert not isinstance(caught.value, HandlerTimeout)


async def test_a_call_within_its_time_and_no_limit_complete() -> None:
    await within(1, asyncio.sleep(0.01), "handler")
    await within(None, asyncio.sleep(0.01), "handler")


def test_a_timeout_goes_to_the_first_retry_tier_and_the_file_sets_it() -> None:
    spec = DownstreamSpec.model_validate({"handler_timeout": "250ms"})
    assert spec.handler_timeout == 250
    assert DownstreamSpec().handler_timeout == 30_000
    decision = on_failure({}, HandlerTimeout("hung"), spec.retry, "inventory.0")
    assert isinstance(decision, Retry) and decision.tier == next(iter(spec.retry.tiers))
