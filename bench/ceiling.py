"""The broker's ceiling from a client that is not Python: the Node amqplib consumer of
bench/node/, installed on first use into a cache folder."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent / "node"
FILES = ("package.json", "package-lock.json", "consume.mjs")


def node_consumer() -> Path | None:
    """The consumer script with its packages installed, or None without node and npm."""
    if not (shutil.which("node") and shutil.which("npm")):
        return None
    key = hashlib.sha256(b"".join((HERE / f).read_bytes() for f in FILES)).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bus-bench-node"
    target = base / key
    if not (target / "node_modules" / ".package-lock.json").exists():
        base.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=base, prefix=".install-"))
        for name in FILES:
            shutil.copy2(HERE / name, staging / name)
        subprocess.run(
            ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=staging,
            stdout=sys.stderr,  # stdout carries the JSON report
            check=True,
            timeout=300,
        )
        try:
            staging.rename(target)
        except OSError:  # installed by another run meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    return target / "consume.mjs"
