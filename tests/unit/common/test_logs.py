"""Logs: readable lines on a terminal, JSON lines otherwise, unless LOG_JSON says."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from common.logs import configure_logging


class Stream(io.StringIO):
    """A stderr that is, or is not, a terminal."""

    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("tty", "forced", "json_lines"),
    [(False, None, True), (True, None, False), (True, True, True), (False, False, False)],
)
def test_the_renderer_follows_the_terminal_unless_forced(
    monkeypatch: pytest.MonkeyPatch, tty: bool, forced: bool | None, json_lines: bool
) -> None:
    stream = Stream(tty)
    monkeypatch.setattr("sys.stderr", stream)
    try:
        configure_logging("INFO", forced)
        structlog.get_logger("t").info("worker.applied", order_id="o-1")
        line = stream.getvalue().strip().splitlines()[-1]
        if json_lines:
            assert json.loads(line)["order_id"] == "o-1"
        else:
            assert "worker.applied" in line and "order_id" in line
            with pytest.raises(json.JSONDecodeError):
                json.loads(line)
    finally:
        configure_logging("INFO", json=False)  # as tests/conftest.py sets it
