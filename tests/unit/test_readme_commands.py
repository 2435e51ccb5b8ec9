"""Every command line the documentation quotes goes through the real argument parser.

The README, CONTRIBUTING.md, CHANGELOG.md and every page under docs/ are read: each
`python -m topology|producer|workers|simulation|demo ...` and `orderbus topology|workers|
producer ...` in a bash block or an inline code span must parse as written.
"""

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

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = [README, ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *sorted(ROOT.glob("docs/*.md"))]
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "topology": lambda: topology_parser(COMMANDS),
    "producer": producer_parser,
    "workers": workers_parser,
    "simulation": simulation_parser,
    "demo": demo_parser,
}
_COMMAND = re.compile(
    r"(?:python -m (topology|producer|workers|simulation|demo)"
    r"|\borderbus (topology|workers|producer))\b((?:<[\w .-]+>|[^`#|)<>&;\n])*)"
)


def _quoted() -> list[tuple[str, str, str]]:
    """(document, module, arguments) of each command in a bash block or an inline code span."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        spans = re.findall(r"```bash\n(.*?)```", text, re.S)
        spans += re.findall(r"`([^`\n]+)`", text)
        for span in spans:
            for module, program, rest in _COMMAND.findall(span.replace("\\\n", " ")):
                found.append((doc.relative_to(ROOT).as_posix(), module or program, rest.strip()))
    return sorted(set(found))


# Metavariables of the synopses, filled with a value of their kind.
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


def test_the_docs_quote_commands_of_every_entry_point() -> None:
    assert {module for _, module, _ in COMMANDS_QUOTED} == set(PARSERS)
    assert len(COMMANDS_QUOTED) > 20
    readme = {module for doc, module, _ in COMMANDS_QUOTED if doc == "README.md"}
    assert readme >= {"topology", "workers", "simulation"}


@pytest.mark.parametrize(("doc", "module", "rest"), COMMANDS_QUOTED)
def test_a_quoted_command_parses(doc: str, module: str, rest: str) -> None:
    words = _words(rest)
    if set(words) <= _NAMES:
        return  # a program or command named in prose; its full command lines are quoted too
    parser = PARSERS[module]()
    try:
        parser.parse_args(words)
    except SystemExit as exc:
        pytest.fail(f"{doc}: `{module} {rest}` does not parse (exit {exc.code})")
