"""Long-running loops: sleeping unless stopped, stopping on signals, reconnecting with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog

from common.backoff import backoff_delay

log = structlog.get_logger("common.loop")
T = TypeVar("T")
# uvloop runs the event loop (and the workers' own consumer protocol) faster where it is
# installed (`pip install '.[fast]'`); BUS_EVENT_LOOP=asyncio keeps the standard loop.
EVENT_LOOP_ENV = "BUS_EVENT_LOOP"


def event_loop_name() -> str:
    """The loop `run` uses: 'uvloop' when installed and not switched off, else 'asyncio'."""
    wanted = os.environ.get(EVENT_LOOP_ENV, "uvloop")
    if wanted == "uvloop" and importlib.util.find_spec("uvloop") is not None:
        return "uvloop"
    return "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, on uvloop when `event_loop_name()` says so."""
    if event_loop_name() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


# A session is given `healthy`, to call once it is established (the backoff starts afresh).
Session = Callable[[Callable[[], None]], Awaitable[None]]


async def sleep_unless(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`, waking as soon as stop is set; True when stop is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set stop (on the running loop)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def reconnecting(
    session: Session,
    stop: asyncio.Event,
    *,
    event: str,
    base: float = 0.1,
    cap: float = 5.0,
    on_failure: Callable[[BaseException], None] | None = None,
    **context: Any,
) -> None:
    """Run session until stop is set; after a failure, wait a growing jittered delay and rerun."""
    failures = 0

    def healthy() -> None:
        nonlocal failures
        failures = 0

    while not stop.is_set():
        try:
            await session(healthy)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            if on_failure is not None:
                on_failure(exc)
            delay = backoff_delay(failures, base=base, cap=cap)
            log.warning(event, error=repr(exc), retry_in_s=round(delay, 3), **context)
            await sleep_unless(stop, delay)
