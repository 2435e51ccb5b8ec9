"""One grammar for every program: common options at any level, one exit-status table in every
--help, a usage error always 2 (never a code that means something else), one duration syntax,
--version everywhere."""

from __future__ import annotations

import argparse

import pytest

from common import cli
from tests.unit.test_cli_help import _parsers
from tests.unit.test_readme_commands import PARSERS

PROGRAMS = {name: build for name, build in PARSERS.items() if name != "demo"}


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "list", "inventory", "--vhost", "x", "--file", "f.yaml", "--json"],
        ["--vhost", "x", "dlq", "list", "inventory"],
        ["dlq", "--vhost", "x", "show", "inventory", "e-1"],
        ["--json", "plan"],
        ["plan", "--json", "--vhost", "x"],
        ["status", "--interval", "30s", "--json"],
        ["capacity", "inventory", "--backlog", "10M", "--within", "2h"],
        ["apply", "--drain-timeout", "10m", "--vhost", "x"],
    ],
)
def test_common_options_go_before_or_after_every_command_nested_ones_too(argv: list[str]) -> None:
    args = PARSERS["topology"]().parse_args(argv)
    if "--vhost" in argv:
        assert args.vhost == "x"
    if "--json" in argv:
        assert args.json is True
    if "--within" in argv:
        assert args.within == 7200.0
    if "--drain-timeout" in argv:
        assert args.drain_timeout == 600.0


def test_an_option_given_after_wins_over_one_given_before() -> None:
    args = PARSERS["topology"]().parse_args(["--vhost", "a", "dlq", "list", "d", "--vhost", "b"])
    assert args.vhost == "b"


@pytest.mark.parametrize(
    ("program", "argv"),
    [
        ("workers", ["all"]),
        ("workers", ["run", "all", "--file", "f.yaml"]),
        ("workers", ["--file", "f.yaml", "inventory", "loyalty"]),
        ("workers", ["migrate", "inventory", "--status"]),
        ("workers", ["--file", "f.yaml", "migrate"]),
        ("producer", ["--metrics-port", "9101", "relay"]),
        ("producer", ["migrate", "--db", "sqlite+aiosqlite:///x.db"]),
        ("simulation", ["orders", "--orders", "5", "--drain-timeout", "2m"]),
        ("simulation", ["workers", "all", "--file", "f.yaml"]),
    ],
)
def test_the_other_programs_take_their_documented_lines(program: str, argv: list[str]) -> None:
    args = PROGRAMS[program]().parse_args(argv)
    assert args.run is not None


def test_workers_without_a_command_runs_and_migrate_is_a_command_of_its_own() -> None:
    parser = PROGRAMS["workers"]()
    assert parser.parse_args(["all"]).downstreams == ["all"]
    assert parser.parse_args(["migrate"]).downstreams == ["all"]
    assert parser.parse_args(["migrate"]).run is not parser.parse_args(["all"]).run


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_every_help_shows_the_one_exit_status_table(program: str) -> None:
    for name, parser in _parsers(program, PROGRAMS[program]()):
        assert cli.EXIT_TABLE in (parser.epilog or ""), f"{name} --help lacks the exit table"


def test_exit_statuses_mean_one_thing_each() -> None:
    codes = [cli.EXIT_OK, cli.EXIT_ERROR, cli.EXIT_USAGE, cli.EXIT_PENDING]
    codes += [cli.EXIT_UNDER_REPLICATED, cli.EXIT_OVER_LAG, cli.EXIT_INTERRUPTED]
    assert len(set(codes)) == len(codes) == len(cli.EXIT_CODES)
    assert cli.EXIT_USAGE == 2  # argparse's own


@pytest.mark.parametrize(
    ("program", "argv"),
    [
        ("topology", ["plan", "--no-such-option"]),
        ("topology", ["dlq", "list"]),
        ("topology", ["diagram", "--json"]),  # a Markdown document: no JSON of it
        ("topology", ["capacity", "inventory", "--backlog", "1M", "--within", "soon"]),
        ("workers", ["migrate", "--bogus"]),
        ("producer", []),
    ],
)
def test_a_usage_error_exits_2(
    program: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = PROGRAMS[program]()
    with pytest.raises(SystemExit) as exited:
        args = parser.parse_args(argv)
        if getattr(args, "json", False) and not args.prints_json:
            args.usage("--json: this command prints no JSON")
    assert exited.value.code == cli.EXIT_USAGE
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_every_program_says_its_version(program: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        PROGRAMS[program]().parse_args(["--version"])
    assert exited.value.code == 0
    assert cli.package_version() in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("2h", 7200), ("15m", 900), ("7d", 604_800), ("250ms", 0.25), ("90", 90)],
)
def test_one_duration_syntax(text: str, seconds: float) -> None:
    assert cli.duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "10 minutes", "-5s", "1h30m", ""])
def test_a_duration_that_is_not_one_is_refused_in_words(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
        cli.duration(text)
