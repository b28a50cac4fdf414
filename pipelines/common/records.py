"""The small records that travel through Beam: pointers to bytes (never the bytes) and quarantine entries."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Pointer"]


class Pointer(NamedTuple):
    """Where one input's bytes are: `length` bytes at `offset` of `url` (a file, or an archive read in place)."""

    key: str
    url: str
    offset: int
    length: int
    meta: dict[str, Any]  # what the dataset knows from listing: label, original name, ...
