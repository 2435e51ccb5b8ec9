"""Every option of every command says what it does, and what it is when not given."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from tests.unit.test_readme_commands import PARSERS

_SILENT_DEFAULTS = (None, False, argparse.SUPPRESS)


def _parsers(
    name: str, parser: argparse.ArgumentParser
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _parsers(f"{name} {sub}", child)


def _options() -> list[tuple[str, argparse.Action]]:
    found = []
    for module, build in PARSERS.items():
        for name, parser in _parsers(module, build()):
            for action in parser._actions:
                if action.option_strings and not isinstance(action, argparse._HelpAction):
                    found.append((f"{name} {action.option_strings[-1]}", action))
    return found


OPTIONS = _options()


def test_every_command_is_walked() -> None:
    assert len(OPTIONS) > 40


@pytest.mark.parametrize(("option", "action"), OPTIONS, ids=[o for o, _ in OPTIONS])
def test_the_option_has_help_that_shows_its_default(option: str, action: argparse.Action) -> None:
    assert action.help and action.help != argparse.SUPPRESS, f"{option} has no help"
    if action.default not in _SILENT_DEFAULTS and action.default != []:
        assert "default" in action.help, f"{option}'s help does not show its default"
