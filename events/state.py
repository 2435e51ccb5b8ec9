"""The order state machine: created -> paid -> shipped, nothing else."""

from __future__ import annotations

from enum import StrEnum

from events.models import EventType


class OrderState(StrEnum):
    """Where an order is in its life."""

    CREATED = "created"
    PAID = "paid"
    SHIPPED = "shipped"


class IllegalTransition(ValueError):
    """An event that the order's current state does not allow."""

    def __init__(self, state: OrderState | None, event_type: EventType) -> None:
        self.state = state
        self.event_type = event_type
        where = "a new order" if state is None else f"an order in state {state.value!r}"
        super().__init__(f"{event_type.value} is not allowed on {where}")


_TRANSITIONS: dict[tuple[OrderState | None, EventType], OrderState] = {
    (None, EventType.CREATED): OrderState.CREATED,
    (OrderState.CREATED, EventType.PAID): OrderState.PAID,
    (OrderState.PAID, EventType.SHIPPED): OrderState.SHIPPED,
}


def transition(state: OrderState | None, event_type: EventType) -> OrderState:
    """Return the state after event_type, or raise IllegalTransition."""
    try:
        return _TRANSITIONS[(state, event_type)]
    except KeyError:
        raise IllegalTransition(state, event_type) from None


def source_state(event_type: EventType) -> OrderState | None:
    """The only state event_type may follow (None: a new order)."""
    return next(s for (s, e) in _TRANSITIONS if e is event_type)
