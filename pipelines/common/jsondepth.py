"""A file wrapper that refuses JSON nested deeper than a bound, checked on the bytes as a streaming parser reads
them (vectorized with NumPy), so a hostile file never reaches the parser's deep end.

Why: ijson builds the path prefix of every event (`annotations.item.segmentation.item.item...`), so a value
nested 100,000 deep costs O(depth^2) bytes - a COCO segmentation nested that deep took the job to 21.7 GB.
"""

from __future__ import annotations

from typing import IO

import numpy as np

__all__ = ["MAX_DEPTH", "DepthChecked", "NestingError"]

MAX_DEPTH = 64  # COCO's deepest value (a polygon's coordinates) sits at depth 5
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


class NestingError(ValueError):
    """JSON nested deeper than the bound: names the file and the byte offset."""


class DepthChecked:
    """`read()` passes the bytes through, after checking them: the nesting depth outside strings never passes
    `limit`. State (depth, inside a string, a run of backslashes) carries across reads."""

    def __init__(self, f: IO[bytes], url: str, limit: int = MAX_DEPTH):
        self.f, self.url, self.limit = f, url, limit
        self.depth, self.in_string, self.backslashes, self.offset = 0, False, 0, 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if data:
            self._check(data)
        return data

    def _check(self, data: bytes) -> None:
        a = np.frombuffer(data, np.uint8)
        if self.backslashes == 0 and b"\\" not in data:  # the common case: no escapes to look at
            quotes = a == _QUOTE
            last_other = None
        else:
            idx = np.arange(len(a))
            is_bs = a == _BACKSLASH
            # backslashes just before each byte (with the run carried from the previous read, where it reaches here)
            last_other = np.maximum.accumulate(np.where(is_bs, -1, idx))
            run_before = np.empty(len(a), np.int64)
            run_before[0] = self.backslashes
            prev_last = last_other[:-1]
            run_before[1:] = np.where(prev_last < 0, idx[1:] + self.backslashes, idx[1:] - 1 - prev_last)
            quotes = (a == _QUOTE) & (run_before % 2 == 0)
        toggles = np.cumsum(quotes) + int(self.in_string)
        inside = (toggles - quotes) % 2 == 1  # inside a string just before this byte (a quote itself: its state before)
        step = _OPEN[a]
        step[inside | quotes] = 0
        depth = np.cumsum(step, dtype=np.int32)
        depth += self.depth
        if len(depth) and depth.max() > self.limit:
            at = int(np.argmax(depth > self.limit))
            raise NestingError(
                f"{self.url}: JSON nested deeper than {self.limit} levels at byte {self.offset + at}; "
                "refused (no COCO value is nested that deep)"
            )
        self.depth = int(depth[-1]) if len(depth) else self.depth
        self.in_string = bool(toggles[-1] % 2)
        if last_other is None:
            self.backslashes = 0
        else:
            trailing = len(a) - 1 - int(last_other[-1])
            self.backslashes = trailing + (self.backslashes if last_other[-1] < 0 else 0)
        self.offset += len(a)
