"""Which samples each rank reads in each epoch, in which order: pure, deterministic, and cheap to recompute.

Given (seed, epoch, world size, rank) the plan is fixed, so a loader can resume mid-epoch by skipping to a batch
without reading anything before it.

- Shard order is a seeded permutation of (seed, epoch): every epoch reshuffles.
- Shards are split among ranks so that each reads only its own shards (one copy of each shard per node's cache):
  in permuted order each shard goes to the rank with the fewest samples so far.
- Every rank yields the same number of samples per epoch: the smallest rank total. The remainder policy: the
  surplus of the larger ranks (their last samples) is skipped this epoch; since the shard order changes every
  epoch, different samples are skipped each time. With `drop_last`, a partial last batch is dropped as well.
- Inside a rank, samples are interleaved from `open_shards` shards at a time (a seeded shuffle of their samples),
  so one batch mixes many shards even though the reader only keeps a few open.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["EpochPlan", "plan_epoch"]


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """The samples of one rank in one epoch: parallel arrays (shard index, sample index within the shard)."""

    epoch: int
    rank: int
    world_size: int
    shard: np.ndarray  # int32
    sample: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.shard)


def _rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, stream])


def plan_epoch(
    shard_sizes: Sequence[int], *, seed: int, epoch: int, world_size: int, rank: int, open_shards: int = 8
) -> EpochPlan:
    """The epoch's sample order for `rank` (see the module docstring for the policy)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    n_shards = len(shard_sizes)
    if n_shards < world_size:
        raise ValueError(f"{n_shards} shards cannot be split among {world_size} ranks; write more shards")
    order = _rng(seed, epoch, 0).permutation(n_shards)
    totals = np.zeros(world_size, dtype=np.int64)
    mine: list[int] = []
    for s in order:  # greedy balance, deterministic ties: lowest rank wins
        r = int(np.argmin(totals))
        totals[r] += shard_sizes[s]
        if r == rank:
            mine.append(int(s))
    per_rank = int(totals.min())
    rng = _rng(seed, epoch, 1 + rank)
    shards, samples = [], []
    for w in range(0, len(mine), open_shards):
        window = mine[w : w + open_shards]
        sh = np.concatenate([np.full(shard_sizes[s], s, dtype=np.int32) for s in window])
        sa = np.concatenate([np.arange(shard_sizes[s], dtype=np.int32) for s in window])
        perm = rng.permutation(len(sh))
        shards.append(sh[perm])
        samples.append(sa[perm])
    shard = np.concatenate(shards) if shards else np.zeros(0, np.int32)
    sample = np.concatenate(samples) if samples else np.zeros(0, np.int32)
    return EpochPlan(epoch=epoch, rank=rank, world_size=world_size, shard=shard[:per_rank], sample=sample[:per_rank])
