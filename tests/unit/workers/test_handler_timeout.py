"""A handler call past its downstream's handler_timeout fails as retryable; the handler's own
TimeoutError and a shutdown's cancellation stay what they are; without a limit nothing is cut."""

from __future__ import annotations

import asyncio

import pytest

from topology.spec import DownstreamSpec
from workers.api import HandlerTimeout, TransientError
from workers.applying.policy import Retry, on_failure
from workers.applying.watchdog import Watchdog


async def test_a_hung_call_fails_as_a_retryable_handler_timeout() -> None:
    watchdog = Watchdog(0.05)
    started = asyncio.get_running_loop().time()
    with pytest.raises(HandlerTimeout, match=r"handler ran past the handler_timeout of 0\.05 s"):
        await watchdog.run(asyncio.Event().wait(), "handler")
    # Cut within a quarter of the timeout after it was due, and nothing left behind.
    assert 0.05 <= asyncio.get_running_loop().time() - started < 0.05 * 1.25 + 0.05
    assert not watchdog.deadlines and not watchdog.cut
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert issubclass(HandlerTimeout, TransientError)


async def test_many_calls_share_one_check_and_only_the_late_one_is_cut() -> None:
    watchdog = Watchdog(0.1)
    quick = [watchdog.run(asyncio.sleep(0.01), "handler") for _ in range(50)]
    late = watchdog.run(asyncio.Event().wait(), "handler")
    results = await asyncio.gather(*quick, late, return_exceptions=True)
    assert results[:50] == [None] * 50 and isinstance(results[50], HandlerTimeout)


async def test_the_handlers_own_timeout_error_is_not_called_ours() -> None:
    async def own() -> None:
        raise TimeoutError("the payment service did not answer")

    with pytest.raises(TimeoutError, match="payment service") as caught:
        await Watchdog(5).run(own(), "handler")
    assert not isinstance(caught.value, HandlerTimeout)


async def test_a_shutdown_cancellation_is_not_a_timeout() -> None:
    watchdog = Watchdog(5)
    task = asyncio.ensure_future(watchdog.run(asyncio.Event().wait(), "handler"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_call_within_its_time_and_no_limit_complete() -> None:
    await Watchdog(1).run(asyncio.sleep(0.01), "handler")
    await Watchdog(None).run(asyncio.sleep(0.01), "handler")


def test_a_timeout_goes_to_the_first_retry_tier_and_the_file_sets_it() -> None:
    spec = DownstreamSpec.model_validate({"handler_timeout": "250ms"})
    assert spec.handler_timeout == 250
    assert DownstreamSpec().handler_timeout == 30_000
    decision = on_failure({}, HandlerTimeout("hung"), spec.retry, "inventory.0")
    assert isinstance(decision, Retry) and decision.tier == next(iter(spec.retry.tiers))
