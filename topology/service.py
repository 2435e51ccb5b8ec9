"""What the long-running programs' commands share: settings, logs and the topology file.

`python -m producer`, `python -m workers` and the simulation's commands get a
`ServiceContext`: the program's settings (read from the environment, logs configured) and
the topology file, validated. A bad setting or file and an unknown downstream end as one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from rich.console import Console

from common import cli
from common.settings import S, Settings
from common.startup import start
from topology.spec import TopologyFileError, TopologySpec, UnknownDownstream, load_spec

S_co = TypeVar("S_co", bound=Settings, covariant=True)


@dataclass(frozen=True)
class ServiceContext(Generic[S_co]):
    """A command's settings, and the topology file it was given (or the settings')."""

    settings: S_co
    spec: TopologySpec
    file: Path | None  # as given on the command line (children are started with it)


def service_context(
    kind: type[S],
) -> Callable[[argparse.Namespace, Console], ServiceContext[S] | None]:
    """The context factory of a program whose settings are of `kind`."""

    def make(args: argparse.Namespace, err: Console) -> ServiceContext[S] | None:
        settings = start(err, kind)
        if settings is None:
            return None
        file = getattr(args, "file", None)
        return ServiceContext(settings, load_spec(file or settings.topology_file), file)

    return make


def _file_error(exc: TopologyFileError) -> str:
    return exc.render()


SERVICE_FAILURES: cli.Failures = {
    TopologyFileError: _file_error,
    UnknownDownstream: cli.lead(""),
}
