"""The handler API (`Handler`, `Tx`, the two errors) and finding a downstream's handler."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from topology.spec import DownstreamSpec
from workers.errors import NonRetryableError, TransientError
from workers.handlers.base import Handler
from workers.tx import Tx, insert_sql

ENTRY_POINT_GROUP = "order_event_bus.handlers"


class HandlerNotFound(Exception):
    """A handler named in the file or an entry point that cannot be loaded."""


def handler_class(downstream: str, named: str | None) -> type[Handler] | None:
    """The handler the file names (`module:Class`), else the one registered under the entry
    point group by the downstream's name, else None."""
    if named is None:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == downstream]
        if not found:
            return None
        named = found[0].value
    module_name, _, class_name = named.partition(":")
    try:
        loaded = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise HandlerNotFound(
            f"{downstream}: cannot load handler {named!r}: {exc} (is its package installed, "
            "or its folder on PYTHONPATH?)"
        ) from exc
    if not (isinstance(loaded, type) and issubclass(loaded, Handler)):
        raise HandlerNotFound(f"{downstream}: {named!r} is not a subclass of Handler")
    return loaded


def handler_for(downstream: str, spec: DownstreamSpec) -> Handler:
    """The downstream's handler (the base `Handler`, which only records, when none is named)."""
    return (handler_class(downstream, spec.handler) or Handler)(spec)


__all__ = [
    "ENTRY_POINT_GROUP",
    "Handler",
    "HandlerNotFound",
    "NonRetryableError",
    "TransientError",
    "Tx",
    "handler_class",
    "insert_sql",
]
