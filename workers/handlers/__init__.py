"""The five downstream handlers, by downstream name."""

from __future__ import annotations

from workers.handlers.base import FaultHook, Handler, OutageSwitch
from workers.handlers.fraud_audit import FraudAuditHandler
from workers.handlers.inventory import InventoryHandler
from workers.handlers.loyalty import LoyaltyHandler
from workers.handlers.recommendations import RecommendationsHandler
from workers.handlers.warehouse import WarehouseHandler

HANDLERS: dict[str, type[Handler]] = {
    h.name: h
    for h in (
        InventoryHandler,
        LoyaltyHandler,
        RecommendationsHandler,
        WarehouseHandler,
        FraudAuditHandler,
    )
}

__all__ = ["HANDLERS", "FaultHook", "Handler", "OutageSwitch"]
