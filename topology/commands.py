"""The shape of every `python -m topology` command, and the one entry that runs them.

A command is its name, its arguments and a `run(args, ctx)` that returns the exit status.
`--file` and `--vhost` are accepted before or after the command's name. Errors every command
can meet (a bad file, an unknown downstream, an unreachable broker) end as one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from aiormq.exceptions import AMQPError
from rich.console import Console
from rich.markup import escape

from broker.management import ManagementClient, ManagementError
from common import cli
from common.cli import EXIT_ERROR
from common.settings import Settings, SettingsError, load_settings, with_vhost
from topology.spec import (
    DEFAULT_TOPOLOGY_FILE,
    TopologyFileError,
    TopologySpec,
    UnknownDownstream,
    load_spec,
)


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


Command = cli.Command[Context]
VHOST = cli.Option(("--vhost",), "vhost (default: the path of $AMQP_URL)")


def build_parser(
    commands: Sequence[Command], description: str | None = None, prog: str = "python -m topology"
) -> argparse.ArgumentParser:
    """The parser of every command; common options go before or after the command's name."""
    return cli.build_parser(prog, description, commands, [cli.FILE, VHOST, cli.JSON])


def _context(args: argparse.Namespace, err: Console) -> Context:
    settings = load_settings()
    return Context(
        settings,
        path=args.file or settings.topology_file or DEFAULT_TOPOLOGY_FILE,
        vhost=args.vhost or settings.vhost,
        err=err,
    )


def _file_error(exc: TopologyFileError) -> str:
    return exc.render()


FAILURES: cli.Failures = {
    SettingsError: cli.lead(""),
    TopologyFileError: _file_error,
    (ManagementError, UnknownDownstream): cli.lead(""),
    (AMQPError, OSError): lambda exc: f"error: the broker at AMQP_URL failed: {exc!r}",
}


def main(
    argv: Sequence[str] | None,
    commands: Sequence[Command],
    description: str | None = None,
    prog: str = "python -m topology",
) -> int:
    """Parse, load the settings, run one command; return its exit status."""
    return cli.main(build_parser(commands, description, prog), argv, _context, FAILURES)
