"""The one command-line grammar of every program: commands, common options, errors in a line.

A program is a list of `Command`s, each with its arguments and either a `run(args, ctx)` that
returns the exit status or subcommands of its own. The program's common options (`--file`,
say) are accepted before the command's name and after it, at every level of subcommands.
The expected failures of a program end as one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Generic, TypeVar

from rich.console import Console

C = TypeVar("C")
DISTRIBUTION = "order-event-bus"
# One meaning per exit status, for every command of every program.
EXIT_OK = 0  # done; all is well
EXIT_ERROR = 1  # the command could not do what it was asked (broker, database, file, refusal)
EXIT_USAGE = 2  # the command line is wrong (argparse's own status)
EXIT_PENDING = 3  # `plan`: the broker differs from the file
EXIT_UNDER_REPLICATED = 4  # `status --fail-under-replicated`: a queue lacks members
EXIT_OVER_LAG = 5  # `status --fail-over-lag`: a downstream lags more than allowed
EXIT_INTERRUPTED = 130  # the shell's code for SIGINT
EXIT_CODES = {
    EXIT_OK: "done; all is well",
    EXIT_ERROR: "the command failed (broker, database, file, or a refusal): one line on stderr",
    EXIT_USAGE: "the command line is wrong",
    EXIT_PENDING: "plan: the broker differs from the file",
    EXIT_UNDER_REPLICATED: "status --fail-under-replicated: a queue has fewer members than asked",
    EXIT_OVER_LAG: "status --fail-over-lag: a downstream lags more than allowed",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
EXIT_TABLE = "exit status:\n" + "\n".join(
    f"  {code:<4} {what}" for code, what in EXIT_CODES.items()
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration(text: str) -> float:
    """An argument type: a duration in seconds, written `250ms`, `30s`, `15m`, `2h`, `7d`, or
    a plain number of seconds."""
    found = _DURATION.match(text)
    if not found:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: write 30s, 15m, 2h, 7d, 250ms or seconds"
        )
    return float(found.group(1)) * _SECONDS[found.group(2)]


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


JSON = Option(("--json",), "print JSON on stdout instead of tables", {"action": "store_true"})
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
    json: bool = False  # it prints JSON with the program's --json


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
    parser = Parser(
        prog=prog,
        description=description,
        epilog="\n\n".join(filter(None, [epilog, EXIT_TABLE])),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        child = sub.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=EXIT_TABLE,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.arguments(child)
        for option in options:
            # SUPPRESS: given here it wins; absent, the value given further up stays.
            option.add(child, argparse.SUPPRESS)
        if command.subcommands:
            _add_commands(child, command.subcommands, options)
        else:
            child.set_defaults(run=command.run, prints_json=command.json, usage=child.error)


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
    if getattr(args, "json", False) and not args.prints_json:
        args.usage("--json: this command prints no JSON")
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
