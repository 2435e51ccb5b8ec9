"""The shape of every `python -m topology` command, and the one entry that runs them.

A command is its name, its arguments and a `run(args, ctx)` that returns the exit status.
`--file` and `--vhost` are accepted before or after the command's name. Errors every command
can meet (a bad file, an unknown downstream, an unreachable broker) end as one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from aiormq.exceptions import AMQPError
from rich.console import Console
from rich.markup import escape

from common.cli import either_side, file_option
from common.settings import Settings, SettingsError, load_settings, with_vhost
from topology.management import ManagementClient, ManagementError
from topology.spec import (
    DEFAULT_TOPOLOGY_FILE,
    TopologyFileError,
    TopologySpec,
    UnknownDownstream,
    load_spec,
)

EXIT_OK, EXIT_ERROR, EXIT_PENDING = 0, 1, 2
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT


@dataclass
class Context:
    """What every command gets: the settings, the topology file, the vhost and consoles."""

    settings: Settings
    path: Path
    vhost: str
    out: Console = field(default_factory=Console)
    err: Console = field(default_factory=lambda: Console(stderr=True))

    @cached_property
    def spec(self) -> TopologySpec:
        """The topology file, validated (TopologyFileError if it is not)."""
        return load_spec(self.path)

    @property
    def amqp_url(self) -> str:
        """The AMQP URL pointed at the chosen vhost."""
        return with_vhost(self.settings.amqp_url, self.vhost)

    def management(self) -> ManagementClient:
        """A management API client (use it as a context manager)."""
        return ManagementClient(
            self.settings.rabbitmq_management_url, ca_file=self.settings.management_ca_file
        )

    def fail(self, message: str) -> int:
        """Print one error line on stderr; return the error exit status."""
        self.err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return EXIT_ERROR


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """A command without arguments of its own."""


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, help, arguments and what it does."""

    name: str
    help: str
    run: Callable[[argparse.Namespace, Context], int]
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments


def _common(parser: argparse.ArgumentParser, default: object) -> None:
    file_option(parser, default)
    parser.add_argument("--vhost", default=default, help="vhost (default: the path of $AMQP_URL)")


def build_parser(
    commands: Sequence[Command], description: str | None = None
) -> argparse.ArgumentParser:
    """The parser of every command; common options go before or after the command's name."""
    parser = argparse.ArgumentParser(prog="python -m topology", description=description)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers = []
    for command in commands:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(p)
        p.set_defaults(run=command.run)
        parsers.append(p)
    either_side(parser, parsers, _common)
    return parser


def main(
    argv: Sequence[str] | None, commands: Sequence[Command], description: str | None = None
) -> int:
    """Parse, load the settings, run one command; return its exit status."""
    args = build_parser(commands, description).parse_args(argv)
    err = Console(stderr=True)
    try:
        settings = load_settings()
    except SettingsError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return EXIT_ERROR
    ctx = Context(
        settings,
        path=args.file or settings.topology_file or DEFAULT_TOPOLOGY_FILE,
        vhost=args.vhost or settings.vhost,
        err=err,
    )
    try:
        return int(args.run(args, ctx))
    except BrokenPipeError:
        # The reader of our output went away (`export | head`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:  # Ctrl-C, e.g. on `status --watch`
        return EXIT_INTERRUPTED
    except TopologyFileError as exc:
        err.print(exc.render(), markup=False, highlight=False)
    except (ManagementError, UnknownDownstream) as exc:
        ctx.fail(str(exc))
    except (AMQPError, OSError) as exc:
        ctx.fail(f"the broker at AMQP_URL failed: {exc!r}")
    return EXIT_ERROR
