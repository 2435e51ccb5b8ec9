"""`python -m topology`: the topology's commands and the operations' commands, one CLI."""

from __future__ import annotations

from collections.abc import Sequence

from operations.capacity_cli import CAPACITY
from operations.dlq_cli import DLQ
from operations.replay_cli import REPLAY
from operations.status_cli import STATUS
from topology import cli, commands

COMMANDS = [*cli.COMMANDS, STATUS, DLQ, REPLAY, CAPACITY]


DESCRIPTION = "The order event bus's topology and its operator tools."


def main(argv: Sequence[str] | None = None, prog: str = "python -m topology") -> int:
    """Run one command of `python -m topology`; return its exit status."""
    return commands.main(argv, COMMANDS, DESCRIPTION, prog)
