"""The one command-line grammar of every program: commands, common options, errors in a line.

A program is a list of `Command`s, each with its arguments and either a `run(args, ctx)` that
returns the exit status or subcommands of its own. The program's common options (`--file`,
say) are accepted before the command's name and after it, at every level of subcommands.
The expected failures of a program end as one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Generic, TypeVar

from rich.console import Console

C = TypeVar("C")
DISTRIBUTION = "order-event-bus"
EXIT_OK, EXIT_ERROR, EXIT_PENDING = 0, 1, 2
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT


def package_version() -> str:
    """The installed distribution's version ('unknown' when run from a bare checkout)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Option:
    """An option every command of a program accepts, before or after the command's name."""

    flags: tuple[str, ...]
    help: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def add(self, parser: argparse.ArgumentParser, default: object) -> None:
        """Add it to one parser with this default."""
        parser.add_argument(*self.flags, default=default, help=self.help, **self.kwargs)


FILE = Option(
    ("--file",),
    "topology file (default: $TOPOLOGY_FILE or the packaged orders.yaml)",
    {"type": Path},
)


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """A command without arguments of its own."""


@dataclass(frozen=True)
class Command(Generic[C]):
    """One command: its name, help and arguments, and what it runs or its subcommands."""

    name: str
    help: str
    run: Callable[[argparse.Namespace, C], int] | None = None
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    subcommands: Sequence[Command[C]] = ()


class Parser(argparse.ArgumentParser):
    """A program's parser; with a default command, a command line that names none runs it
    (`python -m workers all` is `python -m workers run all`)."""

    default_command: str | None = None
    command_names: frozenset[str] = frozenset()

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """Parse, with the default command put in front of the first word that is no command."""
        words = list(sys.argv[1:] if args is None else args)
        if self.default_command is not None:
            words = self._with_default(words)
        return super().parse_known_args(words, namespace)

    def _with_default(self, words: list[str]) -> list[str]:
        at = 0
        while at < len(words) and words[at].startswith("-"):
            if words[at] in ("-h", "--help", "--version"):
                return words
            action = self._option_string_actions.get(words[at])
            takes_value = action is not None and action.nargs != 0 and "=" not in words[at]
            at += 2 if takes_value else 1
        if at < len(words) and words[at] not in self.command_names:
            assert self.default_command is not None
            words.insert(at, self.default_command)
        return words


def build_parser(
    prog: str,
    description: str | None,
    commands: Sequence[Command[C]],
    options: Sequence[Option] = (),
    epilog: str | None = None,
    default: str | None = None,
) -> argparse.ArgumentParser:
    """The program's parser: its commands (nested as deep as they go), `--version`, and the
    common options, accepted at every level. `default` names the command a command line
    without one runs."""
    parser = Parser(prog=prog, description=description, epilog=epilog)
    parser.default_command = default
    parser.command_names = frozenset(c.name for c in commands)
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    for option in options:
        option.add(parser, None)
    _add_commands(parser, commands, options)
    return parser


def _add_commands(
    parser: argparse.ArgumentParser, commands: Sequence[Command[C]], options: Sequence[Option]
) -> None:
    sub = parser.add_subparsers(dest=f"command_{id(parser)}", required=True, metavar="COMMAND")
    for command in commands:
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(child)
        for option in options:
            # SUPPRESS: given here it wins; absent, the value given further up stays.
            option.add(child, argparse.SUPPRESS)
        if command.subcommands:
            _add_commands(child, command.subcommands, options)
        else:
            child.set_defaults(run=command.run)


Failures = Mapping[type[BaseException] | tuple[type[BaseException], ...], Callable[[Any], str]]


def lead(words: str) -> Callable[[BaseException], str]:
    """A failure rendered as `error: <words><the exception's message>`."""
    return lambda exc: f"error: {words}{exc}"


def main(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    context: Callable[[argparse.Namespace, Console], C | None],
    failures: Failures,
) -> int:
    """Parse, build the context (None: it printed why and the program fails), run the command.

    Each failure in `failures` ends as the line its renderer makes, on stderr.
    """
    args = parser.parse_args(argv)
    err = Console(stderr=True)
    try:
        ctx = context(args, err)
        if ctx is None:
            return EXIT_ERROR
        return int(args.run(args, ctx))
    except BrokenPipeError:
        # The reader of our output went away (`export | head`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        render = next((r for kinds, r in failures.items() if isinstance(exc, kinds)), None)
        if render is None:
            raise
        err.print(render(exc), markup=False, highlight=False, soft_wrap=True)
        return EXIT_ERROR
