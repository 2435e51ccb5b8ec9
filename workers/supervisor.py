"""Run each downstream in a process of its own and pass signals on to them."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path

import structlog

from workers.launch import worker_command

log = structlog.get_logger("workers")


async def run_processes(
    downstreams: Sequence[str], file: Path | None, metrics_port: int | None
) -> int:
    """Start `python -m workers <d>` per downstream; SIGTERM/SIGINT reach every child."""
    children: list[asyncio.subprocess.Process] = []
    for i, name in enumerate(downstreams):
        port = metrics_port + i if metrics_port else None
        args = worker_command(name, metrics_port=port, file=file)
        children.append(await asyncio.create_subprocess_exec(*args))
        log.info(
            "worker.process_started",
            downstream=name,
            pid=children[-1].pid,
            metrics_port=metrics_port + i if metrics_port else None,
        )

    def forward(sig: signal.Signals) -> None:
        for child in children:
            if child.returncode is None:
                child.send_signal(sig)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, forward, sig)
    codes = await asyncio.gather(*(c.wait() for c in children))
    for name, code in zip(downstreams, codes, strict=True):
        if code:
            log.error("worker.process_failed", downstream=name, exit_code=code)
    return max(codes, default=0)
