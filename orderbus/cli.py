"""`orderbus topology | workers | producer ...`: the bus's programs under one installed command.

`orderbus topology apply` is `python -m topology apply`, and so on: the same commands, options
and exit statuses, under a name `pip install` puts on the PATH. One command rather than one
per program, so that there is one name to install, to find in `--help`, and to complete in a
shell, and so that every program's line reads the same with either prefix.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from common.cli import EXIT_TABLE, EXIT_USAGE, package_version
from operations import cli as topology_cli
from producer import cli as producer_cli
from workers.process import cli as workers_cli

PROGRAMS: dict[str, tuple[Callable[[Sequence[str], str], int], str]] = {
    "topology": (topology_cli.main, "the topology and the operator tools (python -m topology)"),
    "workers": (workers_cli.main, "the downstreams' workers (python -m workers)"),
    "producer": (producer_cli.main, "the outbox relay and its migrations (python -m producer)"),
}


def usage() -> str:
    """What `orderbus --help` prints."""
    lines = ["usage: orderbus PROGRAM [ARGUMENTS ...]", "", __doc__.strip().splitlines()[0], ""]
    lines += [f"  {name:<10} {what}" for name, (_, what) in PROGRAMS.items()]
    lines += ["", "orderbus PROGRAM --help: that program's commands and options.", EXIT_TABLE]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one program's command line; return its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["--version"], ["-V"]):
        print(f"orderbus {package_version()}")
        return 0
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else EXIT_USAGE
    program = PROGRAMS.get(args[0])
    if program is None:
        print(usage(), file=sys.stderr)
        print(f"orderbus: error: no program {args[0]!r}", file=sys.stderr)
        return EXIT_USAGE
    run, _ = program
    return run(args[1:], f"orderbus {args[0]}")
