"""`python -m producer` through its real argument parser: common options on either side."""

from __future__ import annotations

import itertools

import pytest

from producer.cli import build_parser as producer_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["relay", "--metrics-port", "9101"],
        ["--db", "sqlite+aiosqlite:///x.db", "relay", "--window", "64"],
        ["relay", "--db", "sqlite+aiosqlite:///x.db", "--window", "64", "--file", "f.yaml"],
        ["--file", "f.yaml", "migrate", "--db", "sqlite+aiosqlite:///x.db", "--status"],
    ],
)
def test_the_producer_takes_its_common_options_before_or_after_the_command(
    argv: list[str],
) -> None:
    args = producer_parser().parse_args(argv)
    given = dict(itertools.pairwise(argv))
    for option in ("--metrics-port", "--db", "--window", "--file"):
        if option in given:
            assert str(getattr(args, option[2:].replace("-", "_"))) == given[option]


def test_an_option_after_the_command_wins_over_one_before() -> None:
    args = producer_parser().parse_args(["--db", "a", "relay", "--db", "b"])
    assert args.db == "b"
    assert producer_parser().parse_args(["--db", "a", "relay"]).db == "a"
