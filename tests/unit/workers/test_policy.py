"""Retry and dead-letter decisions, and the failure headers, without a broker."""

from __future__ import annotations

import pytest

from events.headers import DeadReason
from simulation.skus import behaviour_of, flaky_sku, poison_sku
from topology.spec import RetrySpec
from workers.api import NonRetryableError
from workers.applying.policy import (
    DeadLetter,
    Retry,
    Wait,
    gap_detail,
    now_ms,
    on_failure,
    on_gap,
    wait_bound_ms,
)

RETRY = RetrySpec.model_validate(
    {
        "tiers": {"short": "1s", "medium": "10s", "long": "60s"},
        "max_attempts": 5,
        "max_deferrals": 3,
    }
)
BASE = {"order_id": "o-1", "seq": 2, "x-death": [{"queue": "x"}], "x-first-death-queue": "x"}


@pytest.mark.parametrize(
    ("attempts", "tier"), [(0, "short"), (1, "medium"), (2, "long"), (3, "long")]
)
def test_retryable_failures_climb_the_tiers(attempts: int, tier: str) -> None:
    decision = on_failure({**BASE, "x-attempts": attempts}, RuntimeError("db down"), RETRY, "d.0")
    assert isinstance(decision, Retry)
    assert decision.tier == tier
    assert decision.headers["x-attempts"] == attempts + 1
    assert decision.headers["order_id"] == "o-1" and "x-death" not in decision.headers


def test_the_last_attempt_dead_letters_and_parks() -> None:
    decision = on_failure({**BASE, "x-attempts": 4}, RuntimeError("still down"), RETRY, "d.3")
    assert isinstance(decision, DeadLetter) and decision.parks
    h = decision.headers
    assert (h["x-dead-reason"], h["x-attempts"], h["x-failed-queue"]) == (
        "retries-exhausted",
        5,
        "d.3",
    )
    assert h["x-error-type"] == "RuntimeError" and h["x-error-message"] == "still down"
    assert h["x-failed-at"] and "x-death" not in h


def test_non_retryable_dead_letters_at_once() -> None:
    decision = on_failure(BASE, NonRetryableError("bad sku"), RETRY, "d.0")
    assert isinstance(decision, DeadLetter) and decision.reason is DeadReason.NON_RETRYABLE
    assert decision.parks and decision.headers["x-attempts"] == 1


def test_gap_waits_in_the_store_until_its_bound() -> None:
    headers = {**BASE, "x-attempts": 2}
    before = now_ms()
    decision = on_gap(headers, False, RETRY, "d.0", "seq 2 after 0")
    assert isinstance(decision, Wait)
    bound = wait_bound_ms(RETRY)
    assert bound == RETRY.max_deferrals * next(iter(RETRY.tiers.values()))
    assert before + bound <= decision.expires_at_ms <= now_ms() + bound
    # Still within its bound while it waits; past it, dead-lettered.
    assert isinstance(on_gap(headers, False, RETRY, "d.0", "x", now_ms() + 60_000), Wait)
    final = on_gap(headers, False, RETRY, "d.0", "seq 2 after 0", now_ms())
    assert isinstance(final, DeadLetter) and final.reason is DeadReason.PREDECESSOR_MISSING
    assert final.parks and "seq 2 after 0" in final.headers["x-error-message"]


def test_a_copy_deferred_by_an_older_worker_keeps_its_used_waits() -> None:
    used = {**BASE, "x-deferrals": RETRY.max_deferrals}
    decision = on_gap(used, False, RETRY, "d.0", "seq 2 after 0")
    assert isinstance(decision, DeadLetter)
    assert decision.reason is DeadReason.PREDECESSOR_MISSING


def test_a_retry_is_stamped_with_its_due_time() -> None:
    before = now_ms()
    decision = on_failure(BASE, RuntimeError("down"), RETRY, "d.0")
    assert isinstance(decision, Retry)
    delay = RETRY.tiers[decision.tier]
    assert before + delay <= decision.headers["x-retry-at"] <= now_ms() + delay


def test_gap_behind_a_parked_order_is_blocked_and_does_not_repark() -> None:
    decision = on_gap(BASE, True, RETRY, "d.0", "parked behind e-1")
    assert isinstance(decision, DeadLetter)
    assert decision.reason is DeadReason.BLOCKED_BY_PREDECESSOR and not decision.parks


def test_bad_counters_count_as_zero() -> None:
    for bad in ("3", -1, True, None):
        decision = on_failure({"x-attempts": bad}, RuntimeError(), RETRY, "d.0")
        assert isinstance(decision, Retry) and decision.headers["x-attempts"] == 1


def test_stack_is_truncated() -> None:
    def deep(n: int) -> None:
        if n == 0:
            raise RuntimeError("x" * 5000)
        deep(n - 1)

    try:
        deep(200)
    except RuntimeError as exc:
        decision = on_failure({"x-attempts": 4}, exc, RETRY, "d.0")
    assert isinstance(decision, DeadLetter)
    assert len(decision.headers["x-error-stack"]) <= 4000
    assert len(decision.headers["x-error-message"]) <= 1000


def test_sku_markers() -> None:
    assert behaviour_of(flaky_sku("A", 3)).transient_failures == 3
    assert behaviour_of(poison_sku("A")).poison
    assert behaviour_of("SKU-1") == behaviour_of("FLAKYX-1")
    with pytest.raises(ValueError):
        flaky_sku("A", 0)


def test_a_gap_says_what_came_first_what_is_missing_and_how_to_redrive() -> None:
    waiting = gap_detail("inventory", "o-7", 3, 0, None)
    assert "seq 3 arrived before seq 1 (last applied: none yet)" in waiting
    assert "predecessor-missing" in waiting
    assert "python -m topology dlq redrive inventory --order-id o-7" in waiting
    parked = gap_detail("inventory", "o-7", 3, 1, "ev-1")
    assert "parked behind dead-lettered event ev-1 (last applied: seq 1)" in parked
    assert "python -m topology dlq redrive inventory --order-id o-7" in parked
