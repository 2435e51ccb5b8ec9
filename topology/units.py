"""Parsing of human durations ("250ms", "10s", "7d") and sizes ("512MB")."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_DURATION_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_BYTES = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def parse_duration_ms(value: object) -> int:
    """Turn '250ms', '10s', '5m', '1h' or '7d' into milliseconds."""
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"expected a duration with a unit such as '250ms', '10s', '7d'; got {value!r}"
        )
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration: use a number and ms, s, m, h or d")
    return int(m.group(1)) * _DURATION_MS[m.group(2)]


def format_duration(ms: int) -> str:
    """Milliseconds as the file writes them: the largest unit that divides them."""
    for unit in ("d", "h", "m", "s"):
        if ms and ms % _DURATION_MS[unit] == 0:
            return f"{ms // _DURATION_MS[unit]}{unit}"
    return f"{ms}ms"


def parse_size_bytes(value: object) -> int:
    """Turn 512, '512MB' or '1GiB' into bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str) or not (m := _SIZE.match(value)):
        raise ValueError(
            f"{value!r} is not a size: use bytes or a number with B, KB, MB, GB, MiB, GiB"
        )
    return int(m.group(1)) * _SIZE_BYTES[m.group(2)]


def format_ms(ms: int) -> str:
    """Render milliseconds the shortest exact way ('1s', '250ms', '2m')."""
    for unit in ("d", "h", "m", "s"):
        size = _DURATION_MS[unit]
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
