"""What every long-running entry point does first: settings from the environment, then logs."""

from __future__ import annotations

from rich.console import Console

from common.logs import configure_logging
from common.settings import S, SettingsError, load_settings


def start(err: Console, kind: type[S]) -> S | None:
    """Load the settings and configure logging; on a bad setting print one line, return None."""
    try:
        settings = load_settings(kind)
    except SettingsError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return None
    configure_logging(settings.log_level, settings.log_json)
    return settings
