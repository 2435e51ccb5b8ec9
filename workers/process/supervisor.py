"""Run each downstream in a process of its own, restart one that fails, pass signals on."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import structlog

from common.backoff import backoff_delay
from common.loop import sleep_unless
from workers.process.launch import WORKERS, worker_command

log = structlog.get_logger("workers")
# A child that fails more often than this within the window is given up, and with it the
# whole supervisor: its container or unit restarts, and its alerts fire.
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


class Supervisor:
    """The children of `python -m workers all`, one per downstream."""

    def __init__(
        self,
        downstreams: Sequence[str],
        file: Path | None,
        metrics_port: int | None,
        program: Sequence[str] = WORKERS,
    ) -> None:
        self.commands = {
            name: worker_command(
                name,
                metrics_port=metrics_port + i if metrics_port else None,
                file=file,
                program=program,
            )
            for i, name in enumerate(downstreams)
        }
        self.children: dict[str, asyncio.subprocess.Process] = {}
        self.stopping = asyncio.Event()

    def forward(self, sig: signal.Signals) -> None:
        """Pass a signal on to every running child, and stop restarting them."""
        self.stopping.set()
        for child in self.children.values():
            if child.returncode is None:
                child.send_signal(sig)

    async def keep(self, name: str) -> int:
        """Run one downstream's child until the supervisor stops; restart it with backoff
        when it exits by itself. Returns its last exit code (non-zero when given up)."""
        failures: deque[float] = deque()
        while True:
            child = await asyncio.create_subprocess_exec(*self.commands[name])
            self.children[name] = child
            if self.stopping.is_set():  # a signal came while it was starting
                child.send_signal(signal.SIGTERM)
            log.info("worker.process_started", downstream=name, pid=child.pid)
            code = await child.wait()
            if self.stopping.is_set():
                return code
            now = time.monotonic()
            failures.append(now)
            while failures and now - failures[0] > RESTART_WINDOW:
                failures.popleft()
            if len(failures) > MAX_RESTARTS:
                log.error(
                    "worker.process_given_up",
                    downstream=name,
                    exit_code=code,
                    failures=len(failures),
                    within_s=RESTART_WINDOW,
                )
                return code if code > 0 else 1
            delay = backoff_delay(len(failures), base=0.5, cap=10.0)
            log.error(
                "worker.process_failed",
                downstream=name,
                exit_code=code,
                restart_in_s=round(delay, 2),
            )
            if await sleep_unless(self.stopping, delay):
                return code


async def run_processes(
    downstreams: Sequence[str],
    file: Path | None,
    metrics_port: int | None,
    program: Sequence[str] = WORKERS,
) -> int:
    """Start `python <program> <d>` per downstream and keep each running; SIGTERM/SIGINT
    reach every child. A child that keeps failing stops them all, with its exit code."""
    supervisor = Supervisor(downstreams, file, metrics_port, program)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.forward, sig)
    kept = {asyncio.ensure_future(supervisor.keep(name)): name for name in downstreams}
    pending = set(kept)
    codes: dict[str, int] = {}
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            codes[kept[task]] = task.result()
        if not supervisor.stopping.is_set():  # one was given up: stop the others
            supervisor.forward(signal.SIGTERM)
    failed = {name: code for name, code in codes.items() if code > 0}
    return max(failed.values(), default=0)
