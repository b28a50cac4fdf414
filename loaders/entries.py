"""A split's shards of one kind, as a reader looks them up: by index, without a Python object per shard.

A manifest's shard list is a list of dicts (small splits) or a `shards.table.ShardTable` (from 10,000 shards on:
Arrow columns). At 200,000 shards a dict and a URL string per shard cost a rank ~150 MB and a second before its
first batch, for the ~1/world_size of the shards it reads; here a shard's URL and entry are made when it is asked
for, and the sample counts come as one array.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from loaders.cache import ShardJob
from shards import storage
from shards.table import ShardTable

__all__ = ["Chained", "ShardEntries", "ShardUrls"]


class ShardEntries:
    """The manifest's shards whose path ends with `suffix` (".tar", ".arrow"), numbered 0.. in manifest order."""

    def __init__(self, split_url: str, shards: Sequence[dict[str, Any]], suffix: str):
        self.split_url = split_url
        self._table = shards if isinstance(shards, ShardTable) else None
        if self._table is not None:
            import pyarrow.compute as pc

            kind = pc.ends_with(self._table.column("path"), suffix).to_numpy(zero_copy_only=False)
            self._rows = np.flatnonzero(kind)
            self._list: list[dict[str, Any]] = []
        else:
            self._list = [e for e in shards if e["path"].endswith(suffix)]
        self.urls = ShardUrls(self)

    def __len__(self) -> int:
        return len(self._rows) if self._table is not None else len(self._list)

    def get(self, shard: int, key: str) -> Any:
        """Shard `shard`'s value of `key` (None where it has none)."""
        if self._table is not None:
            return self._table.value(key, int(self._rows[shard])) if self._table.has(key) else None
        return self._list[shard].get(key)

    def sizes(self) -> list[int]:
        if self._table is not None:
            return self._table.column("num_samples")[self._rows].tolist()
        return [e["num_samples"] for e in self._list]

    def job(self, shard: int) -> ShardJob:
        return ShardJob(self.urls[shard], self.get(shard, "num_bytes"), self.get(shard, "sha256"))


class ShardUrls(Sequence):
    """The shards' URLs, each joined when asked for (and kept: a rank asks for its own shards again and again)."""

    def __init__(self, entries: ShardEntries):
        self._entries = entries
        self._made: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, shard: Any) -> Any:
        if isinstance(shard, slice):
            return [self[i] for i in range(*shard.indices(len(self)))]
        url = self._made.get(shard)
        if url is None:
            if not -len(self) <= shard < len(self):
                raise IndexError(shard)
            url = self._made[shard] = storage.join(
                self._entries.split_url, self._entries.get(shard % len(self), "path")
            )
        return url

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))


class Chained(Sequence):
    """Several sequences one after another (a mixture's sources' shard URLs, numbered across sources)."""

    def __init__(self, parts: Sequence[Sequence[Any]]):
        self._parts = list(parts)
        self._offsets = np.cumsum([0, *(len(p) for p in self._parts)])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        s = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return self._parts[s][i - int(self._offsets[s])]
