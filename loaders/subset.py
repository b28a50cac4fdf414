"""A fixed, seeded part of a source (`Source(subset=...)`), held as a count per shard: no per-sample array.

How many samples of each shard the subset has is drawn for all shards at once (a multivariate hypergeometric
draw: every set of n samples equally likely, and exactly n of them); which ones, when the plan makes the shard's
window (a seeded choice per shard). A subset of 2 billion samples costs 8 bytes per shard to hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["Subset"]


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


_MARGINALS = 10**9 - 1  # NumPy's multivariate hypergeometric takes fewer samples than 10**9 per draw


@dataclasses.dataclass(frozen=True, eq=False)
class Subset:
    """A fixed, seeded part of a source, made shard by shard: `counts[i]` samples of shard i (drawn for all shards
    at once, so the total is exact), which ones drawn when shard i's window is made. O(shards) to hold; no
    per-sample array."""

    counts: np.ndarray  # int64, per shard
    key: tuple[int, ...]

    @classmethod
    def draw(cls, sizes: Sequence[int], n: int, seed: int, s: int) -> Subset:
        """n samples of shards of `sizes`, each set of n equally likely (up to 10**9 samples; beyond, the split
        between groups of shards of fewer is binomial)."""
        sizes_ = np.asarray(sizes, np.int64)
        gen, counts = _rng(seed, s, 99), np.zeros(len(sizes_), np.int64)
        groups, at, acc = [], 0, 0  # consecutive shards, fewer than 10**9 samples each (or one shard)
        for i, x in enumerate(sizes_.tolist()):
            if acc + x > _MARGINALS and i > at:
                groups.append((at, i))
                at, acc = i, 0
            acc += x
        groups.append((at, len(sizes_)))

        def split(lo: int, hi: int, k: int) -> None:
            if hi - lo == 1:
                a, b = groups[lo]
                if b - a == 1:
                    counts[a] = k
                else:
                    counts[a:b] = gen.multivariate_hypergeometric(sizes_[a:b], k, method="marginals")
                return
            mid = (lo + hi) // 2
            left, right = (
                int(sizes_[groups[lo][0] : groups[mid][0]].sum()),
                int(sizes_[groups[mid][0] : groups[hi - 1][1]].sum()),
            )
            x = min(max(int(gen.binomial(k, left / (left + right))), k - right), left)
            split(lo, mid, x)
            split(mid, hi, k - x)

        split(0, len(groups), n)
        return cls(counts, (seed, s, 99))

    def samples(self, shard: int, size: int) -> np.ndarray:
        """The chosen samples of one shard (of `size` samples), ascending."""
        pick = _rng(*self.key, shard).choice(size, int(self.counts[shard]), replace=False)
        return np.sort(pick).astype(np.int32)
