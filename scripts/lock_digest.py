"""The digest of pyproject.toml's requirements (all extras), as constraints.txt records it."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirements() -> list[str]:
    """Every requirement of the project and its extras, sorted."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    found = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        found += extra
    return sorted(set(found))


def digest() -> str:
    """sha256 of the requirements, one a line."""
    return hashlib.sha256("\n".join(requirements()).encode()).hexdigest()


if __name__ == "__main__":
    print(digest())
