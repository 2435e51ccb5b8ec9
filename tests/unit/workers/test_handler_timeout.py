"""A handler call past its downstream's handler_timeout fails as retryable; the handler's own
TimeoutError and a shutdown's cancellation stay what they are; without a limit nothing is cut.

A watchdog that never fires fails these tests in seconds (each waits for the cut a bounded
time, and the module has its own pytest timeout), never hanging the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from events import AnyEvent, encode
from tests.support.factories import order_events, received_of
from topology.spec import DownstreamSpec
from workers.api import Handler, HandlerTimeout, TransientError
from workers.applying import watchdog as watchdog_module
from workers.applying.guard import OrderingGuard
from workers.applying.policy import DeadLetter, Retry, on_failure
from workers.applying.progress import ProgressCache
from workers.applying.watchdog import CHECKS_PER_TIMEOUT, Watchdog
from workers.metrics import DownstreamMetrics, WorkerMetrics
from workers.store.database import DownstreamStore

pytestmark = pytest.mark.timeout(20)
CUT_WITHIN = 5.0  # seconds a test waits for a cut that is due in well under one


async def _cut(call: Awaitable[None]) -> HandlerTimeout:
    """The HandlerTimeout a hung call ends with; fails when it is not cut in CUT_WITHIN s."""
    try:
        await asyncio.wait_for(call, CUT_WITHIN)
    except HandlerTimeout as exc:
        return exc
    except TimeoutError:
        raise AssertionError(f"the watchdog did not cut a hung call within {CUT_WITHIN}s") from None
    raise AssertionError("a hung call returned")


class CountedChecks:
    """Stands in for the watchdog module's asyncio, counting the checker's rounds."""

    def __init__(self) -> None:
        self.rounds = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, seconds: float) -> None:
        self.rounds += 1
        await asyncio.sleep(seconds)


async def test_a_hung_call_fails_as_a_retryable_handler_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checks = CountedChecks()
    monkeypatch.setattr(watchdog_module, "asyncio", checks)
    watchdog = Watchdog(0.05)
    started = asyncio.get_running_loop().time()
    timeout = await _cut(watchdog.run(asyncio.Event().wait(), "handler"))
    assert str(timeout) == "handler ran past the handler_timeout of 0.05 s"
    # Not before it was due, and at the first check after (a check every quarter of the
    # timeout): counted in the watchdog's rounds, which a loaded machine only makes later.
    assert asyncio.get_running_loop().time() - started >= 0.05
    assert checks.rounds <= CHECKS_PER_TIMEOUT + 1, f"cut after {checks.rounds} checks"
    # Nothing left behind.
    assert not watchdog.deadlines and not watchdog.cut
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert issubclass(HandlerTimeout, TransientError)


async def test_many_calls_share_one_check_and_only_the_late_one_is_cut() -> None:
    watchdog = Watchdog(0.1)
    quick = [watchdog.run(asyncio.sleep(0.01), "handler") for _ in range(50)]
    late = watchdog.run(asyncio.Event().wait(), "handler")
    results = await asyncio.wait_for(
        asyncio.gather(*quick, late, return_exceptions=True), CUT_WITHIN
    )
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
        await asyncio.wait_for(task, CUT_WITHIN)


async def test_a_call_within_its_time_and_no_limit_complete() -> None:
    await Watchdog(1).run(asyncio.sleep(0.01), "handler")
    await Watchdog(None).run(asyncio.sleep(0.01), "handler")


def test_a_timeout_goes_to_the_first_retry_tier_and_the_file_sets_it() -> None:
    spec = DownstreamSpec.model_validate({"handler_timeout": "250ms"})
    assert spec.handler_timeout == 250
    assert DownstreamSpec().handler_timeout == 30_000
    decision = on_failure({}, HandlerTimeout("hung"), spec.retry, "inventory.0")
    assert isinstance(decision, Retry) and decision.tier == next(iter(spec.retry.tiers))


class Hanging(Handler):
    """A handler whose check never returns."""

    name = "hanging"

    async def check(self, event: AnyEvent, attempts: int) -> None:
        await asyncio.Event().wait()


@pytest.fixture
async def hanging_guard(tmp_path: Path) -> AsyncIterator[OrderingGuard]:
    spec = DownstreamSpec.model_validate({"handler_timeout": "50ms"})
    handler = Hanging(spec)
    store = await DownstreamStore.open("d", handler.metadata, None, tmp_path)
    metrics = DownstreamMetrics(WorkerMetrics(CollectorRegistry()), "d", spec.retry.tiers)
    guard = OrderingGuard.for_downstream("d", spec, store, handler, ProgressCache(store), metrics)
    try:
        yield guard
    finally:
        await guard.close()
        await store.close()


class Delivery:
    """A decoded delivery as the guard reads it."""

    def __init__(self, event: AnyEvent) -> None:
        self.message, self.event, self.unsupported = received_of(encode(event)), event, None
        self.shard, self.event_id = "d.0", str(event.event_id)
        self.order_id, self.seq = event.order_id, event.seq


class Moves:
    """A fake divert: the decisions the guard republished."""

    def __init__(self) -> None:
        self.decisions: list[Retry | DeadLetter] = []

    async def move(self, message: Any, decision: Retry | DeadLetter, context: Any) -> None:
        self.decisions.append(decision)


async def test_the_guard_cuts_a_hung_handler_and_retries_its_event(
    hanging_guard: OrderingGuard,
) -> None:
    moves = Moves()
    handled = hanging_guard.handle(Delivery(order_events("o-hung")[0]), moves)
    try:
        await asyncio.wait_for(handled, CUT_WITHIN)
    except TimeoutError:
        raise AssertionError(
            f"a handler hung past its 50 ms handler_timeout was not cut within {CUT_WITHIN}s"
        ) from None
    [decision] = moves.decisions
    assert isinstance(decision, Retry), decision
    assert decision.headers["x-attempts"] == 1
