"""What `python -m producer` and `python -m workers` share: start, read the file, run, fail well."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from common.loop import run
from common.settings import S
from common.startup import start
from topology.spec import TopologyFileError, TopologySpec, UnknownDownstream, load_spec

Runner = Callable[[S, TopologySpec], Coroutine[Any, Any, int]]


def run_service(
    kind: type[S],
    file: Path | None,
    runner: Runner[S],
    failures: Mapping[type[Exception] | tuple[type[Exception], ...], str],
) -> int:
    """Settings and logs, the topology file, then the runner; return the exit status.

    A bad setting or file, an unknown downstream, and each expected failure (mapped to the
    words that lead its message) end as one line on stderr, never a traceback.
    """
    err = Console(stderr=True)
    if (settings := start(err, kind)) is None:
        return 1
    try:
        spec = load_spec(file or settings.topology_file)
        return run(runner(settings, spec))
    except TopologyFileError as exc:
        err.print(exc.render(), markup=False, highlight=False)
    except UnknownDownstream as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        lead = next((w for kinds, w in failures.items() if isinstance(exc, kinds)), None)
        if lead is None:
            raise
        err.print(f"error: {lead}{exc}", markup=False, highlight=False, soft_wrap=True)
    return 1
