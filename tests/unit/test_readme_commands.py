"""Every `python -m ...` command line the README quotes goes through the real argument parser."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from demo.__main__ import build_parser as demo_parser
from operations.cli import COMMANDS
from producer.cli import build_parser as producer_parser
from simulation.cli import build_parser as simulation_parser
from topology.commands import build_parser as topology_parser
from workers.process.cli import build_parser as workers_parser

README = Path(__file__).resolve().parents[2] / "README.md"
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "topology": lambda: topology_parser(COMMANDS),
    "producer": producer_parser,
    "workers": workers_parser,
    "simulation": simulation_parser,
    "demo": demo_parser,
}
_COMMAND = re.compile(r"python -m (topology|producer|workers|simulation|demo)\b([^`#|)>\n]*)")


def _quoted() -> list[tuple[str, str]]:
    """(module, arguments) of each command in a bash block or an inline code span."""
    text = README.read_text()
    spans = re.findall(r"```bash\n(.*?)```", text, re.S)
    spans += re.findall(r"`([^`\n]+)`", text)
    found = []
    for span in spans:
        for module, rest in _COMMAND.findall(span.replace("\\\n", " ")):
            found.append((module, rest.strip()))
    return sorted(set(found))


# Metavariables of the README's synopses, filled with a value of their kind.
_PLACEHOLDERS = {"N": "10", "R": "non-retryable"}
# Commands named in prose (`python -m topology dlq`): a mention, not a command line.
_NAMES = {c.name for c in COMMANDS} | {"list", "show", "redrive", "purge"}
_NAMES |= {"relay", "migrate", "run", "orders", "workers"}


def _words(rest: str) -> list[str]:
    """The arguments with `[optional]` parts kept and `<placeholders>` filled in."""
    rest = re.sub(r"<[^>]+>", "x", rest.replace("[", " ").replace("]", " "))
    words = [w for w in shlex.split(rest) if w not in ("…", "...")]
    return [_PLACEHOLDERS.get(w, w) for w in words]


COMMANDS_QUOTED = _quoted()


def test_the_readme_quotes_commands_of_every_entry_point() -> None:
    assert {module for module, _ in COMMANDS_QUOTED} == set(PARSERS)
    assert len(COMMANDS_QUOTED) > 20


@pytest.mark.parametrize(("module", "rest"), COMMANDS_QUOTED)
def test_a_quoted_command_parses(module: str, rest: str) -> None:
    words = _words(rest)
    if set(words) <= _NAMES:
        return  # a program or command named in prose; its full command lines are quoted too
    parser = PARSERS[module]()
    try:
        parser.parse_args(words)
    except SystemExit as exc:
        pytest.fail(f"`python -m {module} {rest}` does not parse (exit {exc.code})")
