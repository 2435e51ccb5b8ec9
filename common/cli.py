"""What every command line shares: the topology file option, given before or after a command."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path


def file_option(parser: argparse.ArgumentParser, default: object) -> None:
    """--file: the topology file."""
    parser.add_argument(
        "--file",
        type=Path,
        default=default,
        help="topology file (default: $TOPOLOGY_FILE or the packaged orders.yaml)",
    )


def either_side(
    parser: argparse.ArgumentParser,
    commands: Iterable[argparse.ArgumentParser],
    add: Callable[[argparse.ArgumentParser, object], None],
) -> None:
    """Common options accepted before a command's name and after it."""
    add(parser, None)
    for command in commands:
        # SUPPRESS: given after the command it wins, absent it keeps the value given before.
        add(command, argparse.SUPPRESS)
