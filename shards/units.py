"""Human byte sizes for command lines: '256MB', '1.5GiB', '110KB', '4096'."""

from __future__ import annotations

import re

__all__ = ["counted", "parse_size", "format_size"]

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.I)


def parse_size(text: str | int) -> int:
    """'256MB' -> 256_000_000, '1GiB' -> 1_073_741_824; decimal units unless 'i' is given."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"cannot read {text!r} as a size; use e.g. 256MB, 1GiB or 4096")
    number, unit, binary = m.groups()
    scale = 1024 ** "kmgt".index(unit.lower()) * 1024 if unit and binary else _UNITS[unit.lower()]
    value = int(float(number) * scale)
    if value <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return value


def format_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def counted(n: int, noun: str) -> str:
    """'1 shard', '2 shards', '0 shards': a count with its noun (regular English plurals only)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
