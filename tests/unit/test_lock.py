"""constraints.txt, the lock scripts/setup and the Dockerfile install from, agrees with
pyproject.toml: written for exactly its requirements, and pinning each one at a version the
requirement accepts."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "constraints.txt"


def _digest_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "lock_digest", ROOT / "scripts" / "lock_digest.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not a pin"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_the_lock_was_written_for_these_requirements() -> None:
    recorded = re.search(r"^# requirements-sha256: (\w+)$", LOCK.read_text(), re.M)
    assert recorded, "constraints.txt names no requirements digest: run scripts/lock"
    assert recorded.group(1) == _digest_module().digest(), (
        "pyproject.toml's requirements changed since constraints.txt was written: run scripts/lock"
    )


def test_every_requirement_is_pinned_at_a_version_it_accepts() -> None:
    pins = _pins()
    for line in _digest_module().requirements():
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{requirement.name}=={pins[name]} does not satisfy {requirement}"
        )
        for extra in requirement.extras:  # e.g. SQLAlchemy[asyncio] pulls greenlet
            assert extra, requirement
