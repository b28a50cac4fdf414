"""Which samples each rank reads in each epoch, in which order: pure, deterministic, and cheap to recompute.

The epoch is one **global order** of samples that does not depend on the number of ranks: a pure function of
(seed, epoch, the sources and their weights). Ranks read equal, contiguous blocks of it. So a job can stop after
any batch and resume on another number of ranks: what all ranks consumed is a set of intervals of the global
order (`consumed_after`), and the rest is cut into equal blocks again for the new ranks - nothing is read twice,
nothing is left out but the remainder below.

- One source's order (a "pass" over its samples): a seeded permutation of its shards, cut into windows of
  `open_shards` shards whose samples are shuffled together - so a block of the order touches few shards (each rank
  fetches and caches about its share of them) while a batch mixes several.
- An epoch takes `take` samples from each source. Taking all of them (the default), every epoch is a new pass.
  Taking fewer (`epoch_size`, weights), consecutive epochs take disjoint slices of one pass until fewer than
  `take` are left; those are left out of that pass (different ones each pass: it is reshuffled) and the next
  epoch starts a new pass. Taking more needs `repeat` (with replacement: passes are concatenated).
- Sources are interleaved evenly: source s holds positions spread through the epoch in proportion to its take,
  so every batch carries close to the weights (a deterministic, seeded interleave: the counts per epoch are
  exact, not just within binomial error).
- Remainder: each rank reads floor(remaining / ranks) samples; the last < ranks samples of the order are left
  out (and with `drop_last`, each rank's partial last batch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["EpochPlan", "SourcePlan", "consumed_after", "epoch_order", "plan_epoch", "rank_block", "source_take"]

Intervals = list[tuple[int, int]]  # [start, stop) ranges of positions in the epoch's global order


@dataclasses.dataclass(frozen=True)
class SourcePlan:
    """What the plan needs of one source: samples per shard, how many to take per epoch, and its members (all
    samples, or a fixed subset as (shard, sample) arrays)."""

    sizes: tuple[int, ...]
    take: int
    repeat: bool = False
    members: tuple[np.ndarray, np.ndarray] | None = None  # a subset; None: every sample

    @property
    def count(self) -> int:
        return len(self.members[0]) if self.members is not None else int(sum(self.sizes))


@dataclasses.dataclass(frozen=True)
class EpochPlan:
    """The samples of one rank in one epoch: parallel arrays (source, global shard index, sample index)."""

    epoch: int
    rank: int
    world_size: int
    shard: np.ndarray  # int32, numbered across sources (source s's shard i is offset_s + i)
    sample: np.ndarray  # int32
    source: np.ndarray  # int16
    total: int = 0  # length of the epoch's global order

    def __len__(self) -> int:
        return len(self.shard)


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


def _pass(src: SourcePlan, seed: int, s: int, k: int, open_shards: int) -> tuple[np.ndarray, np.ndarray]:
    """Source s's k-th pass: every member once, shards permuted, samples shuffled within windows of shards."""
    if src.members is not None:
        shard, sample = src.members
    else:
        sizes = np.asarray(src.sizes, np.int64)
        shard = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
        sample = (np.arange(len(shard), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)).astype(np.int32)
    rank_of_shard = np.empty(len(src.sizes), np.int64)
    rank_of_shard[_rng(seed, s, k, 0).permutation(len(src.sizes))] = np.arange(len(src.sizes))
    window = rank_of_shard[shard] // open_shards
    order = np.lexsort((_rng(seed, s, k, 1).random(len(shard)), window))
    return shard[order], sample[order]


def source_take(src: SourcePlan, seed: int, s: int, epoch: int, open_shards: int) -> tuple[np.ndarray, np.ndarray]:
    """The `take` samples source s gives to `epoch`, in order (see the module docstring for the policy)."""
    n, total = src.take, src.count
    if n == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    if n <= total:
        per_pass = total // n  # epochs per pass
        k, j = divmod(epoch, per_pass)
        shard, sample = _pass(src, seed, s, k, open_shards)
        return shard[j * n : (j + 1) * n], sample[j * n : (j + 1) * n]
    if not src.repeat:
        raise ValueError(f"source {s} gives {total} samples but {n} are asked per epoch; set repeat=True")
    start = epoch * n
    parts = [_pass(src, seed, s, k, open_shards) for k in range(start // total, (start + n - 1) // total + 1)]
    shard, sample = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    off = start - (start // total) * total
    return shard[off : off + n], sample[off : off + n]


def epoch_order(
    sources: Sequence[SourcePlan], *, seed: int, epoch: int, open_shards: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, global shard, sample) of every position of the epoch's global order."""
    offsets = np.cumsum([0, *(len(s.sizes) for s in sources)])
    takes = [source_take(src, seed, s, epoch, open_shards) for s, src in enumerate(sources)]
    if len(sources) == 1:
        shard, sample = takes[0]
        return np.zeros(len(shard), np.int16), shard.astype(np.int32), sample.astype(np.int32)
    # an even, seeded interleave: source s's j-th sample sits at (j + u_s) / take_s of the epoch
    keys = np.concatenate(
        [(np.arange(len(t[0])) + _rng(seed, epoch, 7, s).random()) / max(1, len(t[0])) for s, t in enumerate(takes)]
    )
    src = np.concatenate([np.full(len(t[0]), s, np.int16) for s, t in enumerate(takes)])
    order = np.lexsort((src, keys))
    shard = np.concatenate([t[0].astype(np.int64) + offsets[s] for s, t in enumerate(takes)])
    sample = np.concatenate([t[1] for t in takes])
    return src[order], shard[order].astype(np.int32), sample[order].astype(np.int32)


def _remaining(total: int, consumed: Intervals) -> np.ndarray:
    left = np.ones(total, bool)
    for a, b in consumed:
        left[a:b] = False
    return np.flatnonzero(left)


def rank_block(total: int, consumed: Intervals, world_size: int, rank: int) -> np.ndarray:
    """Positions of the global order this rank reads, in order: its equal, contiguous share of what is left."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    left = _remaining(total, consumed)
    per = len(left) // world_size
    return left[rank * per : (rank + 1) * per]


def consumed_after(total: int, consumed: Intervals, world_size: int, samples_per_rank: int) -> Intervals:
    """The intervals consumed once every rank of a `world_size` job read `samples_per_rank` of its block (ranks
    of a data-parallel job advance together, so any one rank's count says it for all)."""
    left = _remaining(total, consumed)
    per = len(left) // world_size
    done = np.zeros(total, bool)
    for a, b in consumed:
        done[a:b] = True
    for r in range(world_size):
        done[left[r * per : r * per + min(per, samples_per_rank)]] = True
    edges = np.flatnonzero(np.diff(np.concatenate([[0], done.view(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def plan_epoch(
    sources: Sequence[SourcePlan] | Sequence[int],
    *,
    seed: int,
    epoch: int,
    world_size: int,
    rank: int,
    open_shards: int = 8,
    consumed: Intervals = (),
) -> EpochPlan:
    """The epoch's sample order for `rank` over what `consumed` leaves (see the module docstring for the policy).
    `sources` may be one source's shard sizes."""
    if sources and not isinstance(sources[0], SourcePlan):  # one source given by its shard sizes
        sizes = tuple(int(x) for x in sources)
        sources = [SourcePlan(sizes, take=sum(sizes))]
    src, shard, sample = epoch_order(sources, seed=seed, epoch=epoch, open_shards=open_shards)
    mine = rank_block(len(shard), list(consumed), world_size, rank)
    return EpochPlan(
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        shard=shard[mine],
        sample=sample[mine],
        source=src[mine],
        total=len(shard),
    )
