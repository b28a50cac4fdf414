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
import math
from collections.abc import Sequence

import numpy as np

from loaders.subset import Subset

__all__ = [
    "PLAN_VERSION",
    "EpochPlan",
    "SourcePlan",
    "consumed_after",
    "epoch_order",
    "epoch_slice",
    "plan_epoch",
    "rank_block",
    "rank_intervals",
    "source_take",
]

Intervals = list[tuple[int, int]]  # [start, stop) ranges of positions in the epoch's global order

# Saved in loader states. 2: subsets drawn shard by shard (`Subset`); the order of sources without a subset is
# the same as version 1's, so only a version-1 state with a subset is refused.
PLAN_VERSION = 2


@dataclasses.dataclass(frozen=True)
class SourcePlan:
    """What the plan needs of one source: samples per shard, how many to take per epoch, and which of its samples
    it gives (all, or a fixed `Subset`)."""

    sizes: tuple[int, ...]
    take: int
    repeat: bool = False
    subset: Subset | None = None

    @property
    def count(self) -> int:
        return int(self.subset.counts.sum()) if self.subset is not None else int(sum(self.sizes))

    @property
    def counts(self) -> np.ndarray:
        """Samples given per shard."""
        return self.subset.counts if self.subset is not None else np.asarray(self.sizes, np.int64)


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
    counts = src.counts
    shard = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    if src.subset is not None:
        parts = [src.subset.samples(i, size) for i, size in enumerate(src.sizes)]
        sample = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    else:
        sample = (np.arange(len(shard), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)).astype(
            np.int32
        )
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


class _Pass:
    """Source s's k-th pass located without being materialized: the same order as `_pass`, from which any range of
    positions is made at the cost of the windows it touches. Memory and time: O(shards) to locate, O(samples of
    the range + two windows) to make it. The keys of a window's samples are drawn from the pass's random stream at
    their offsets (PCG64 jumps ahead), so the order is exactly the one the whole pass would give."""

    def __init__(self, src: SourcePlan, seed: int, s: int, k: int, open_shards: int):
        n = len(src.sizes)
        self.subset, self.sizes = src.subset, src.sizes
        counts = self.counts = src.counts
        self.first = np.cumsum(counts) - counts  # stream offset (member index) of each shard's first member
        rank_of_shard = np.empty(n, np.int64)
        rank_of_shard[_rng(seed, s, k, 0).permutation(n)] = np.arange(n)
        window = rank_of_shard // open_shards
        self.by_window = np.lexsort((np.arange(n), window))  # shards window by window, by id within one
        self.window_of = window[self.by_window]
        nw = int(window.max()) + 1 if n else 0
        self.wsize = np.bincount(window, weights=counts, minlength=nw).astype(np.int64)
        self.wstart = np.cumsum(self.wsize) - self.wsize
        self.wfirst = np.searchsorted(self.window_of, np.arange(nw))  # index in by_window of each window's first
        self.key = (seed, s, k, 1)

    def _window(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Window w's members in pass order."""
        lo = self.wfirst[w]
        hi = self.wfirst[w + 1] if w + 1 < len(self.wfirst) else len(self.by_window)
        shards = self.by_window[lo:hi]
        gen = np.random.Generator(np.random.PCG64(list(self.key)))
        at, keys, shard_ids, samples = 0, [], [], []
        for sh in shards.tolist():
            first, count = int(self.first[sh]), int(self.counts[sh])
            if count == 0:
                continue
            gen.bit_generator.advance(first - at)
            keys.append(gen.random(count))
            at = first + count
            shard_ids.append(np.full(count, sh, np.int32))
            if self.subset is None:
                samples.append(np.arange(count, dtype=np.int32))
            else:
                samples.append(self.subset.samples(sh, self.sizes[sh]))
        if not keys:
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        order = np.argsort(np.concatenate(keys), kind="stable")
        return np.concatenate(shard_ids)[order], np.concatenate(samples)[order]

    def slice(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard, sample) at positions [a, b) of the pass."""
        if b <= a:
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        w0 = int(np.searchsorted(self.wstart, a, side="right")) - 1
        w1 = int(np.searchsorted(self.wstart, b, side="left"))
        parts = []
        for w in range(max(w0, 0), w1):
            shard, sample = self._window(w)
            lo, hi = max(a - int(self.wstart[w]), 0), min(b - int(self.wstart[w]), len(shard))
            parts.append((shard[lo:hi], sample[lo:hi]))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _take_slice(
    src: SourcePlan, passes: dict, seed: int, s: int, epoch: int, open_shards: int, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions [lo, hi) of what source s gives to `epoch` (`source_take(...)[lo:hi]`), made from its passes."""
    n, total = src.take, src.count
    if hi <= lo:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    if n > total and not src.repeat:
        raise ValueError(f"source {s} gives {total} samples but {n} are asked per epoch; set repeat=True")
    if n <= total:
        k, j = divmod(epoch, total // n)
        spans = [(k, j * n + lo, j * n + hi)]
    else:  # passes concatenated: stream positions epoch * n + [lo, hi)
        start, stop, spans = epoch * n + lo, epoch * n + hi, []
        while start < stop:
            k, off = divmod(start, total)
            step = min(stop - start, total - off)
            spans.append((k, off, off + step))
            start += step
    parts = []
    for k, a, b in spans:
        if (s, k) not in passes:
            passes[(s, k)] = _Pass(src, seed, s, k, open_shards)
        parts.append(passes[(s, k)].slice(a, b))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _key(j: int, u: float, take: int) -> float:
    return (float(j) + u) / max(1, take)  # the same float operations as the interleave in `epoch_order`


def _below(take: int, u: float, x: float) -> int:
    """How many of a source's `take` interleave keys are below x (they increase with j)."""
    c = min(max(math.ceil(x * max(1, take) - u), 0), take)
    while c > 0 and _key(c - 1, u, take) >= x:
        c -= 1
    while c < take and _key(c, u, take) < x:
        c += 1
    return c


def _interleaved(takes: Sequence[int], us: Sequence[float], a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
    """(source, index in its take) at positions [a, b) of the even interleave of `epoch_order`, made from the
    sources whose keys can fall there: each source's count below a key is within one of key * take, so the
    positions lie between the keys (a - S - 2) / total and (b + S + 2) / total."""
    total, margin = sum(takes), len(takes) + 2
    while True:
        x_lo, x_hi = (a - margin) / total, (b + margin) / total
        lo = [_below(t, u, x_lo) for t, u in zip(takes, us, strict=True)]
        hi = [_below(t, u, x_hi) for t, u in zip(takes, us, strict=True)]
        if sum(lo) <= a and sum(hi) >= b:
            break
        margin *= 2  # never needed but for float rounding: widen and count again
    keys = np.concatenate(
        [(np.arange(first, end) + u) / max(1, t) for first, end, u, t in zip(lo, hi, us, takes, strict=True)]
    )
    src = np.concatenate([np.full(end - first, i, np.int16) for i, (first, end) in enumerate(zip(lo, hi, strict=True))])
    index = np.concatenate([np.arange(first, end, dtype=np.int64) for first, end in zip(lo, hi, strict=True)])
    order = np.lexsort((src, keys))[a - sum(lo) : b - sum(lo)]
    return src[order], index[order]


def epoch_slice(
    sources: Sequence[SourcePlan],
    *,
    seed: int,
    epoch: int,
    open_shards: int,
    a: int,
    b: int,
    passes: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions [a, b) of `epoch_order(...)`, made at the cost of that range (and the shard tables): what a rank
    computes of the epoch. `passes` caches the sources' located passes between calls."""
    passes = {} if passes is None else passes
    offsets = np.cumsum([0, *(len(s.sizes) for s in sources)])
    if len(sources) == 1:
        shard, sample = _take_slice(sources[0], passes, seed, 0, epoch, open_shards, a, b)
        return np.zeros(len(shard), np.int16), shard.astype(np.int32), sample.astype(np.int32)
    us = [float(_rng(seed, epoch, 7, s).random()) for s in range(len(sources))]
    src, index = _interleaved([x.take for x in sources], us, a, b)
    shard, sample = np.zeros(b - a, np.int64), np.zeros(b - a, np.int32)
    for s, x in enumerate(sources):
        rows = np.flatnonzero(src == s)
        if len(rows):  # a source's indexes in a range of the interleave are consecutive
            first = int(index[rows[0]])
            got = _take_slice(x, passes, seed, s, epoch, open_shards, first, first + len(rows))
            shard[rows], sample[rows] = got[0].astype(np.int64) + offsets[s], got[1]
    return src, shard.astype(np.int32), sample


def _left(total: int, consumed: Intervals) -> Intervals:
    """The intervals of [0, total) that `consumed` leaves."""
    out, at = [], 0
    for a, b in sorted((max(0, a), min(total, b)) for a, b in consumed):
        if a > at:
            out.append((at, a))
        at = max(at, b)
    if at < total:
        out.append((at, total))
    return out


def _nth(left: Intervals, lo: int, hi: int) -> Intervals:
    """The intervals holding the lo-th to the hi-th (excluded) positions of `left`."""
    out, seen = [], 0
    for a, b in left:
        n = b - a
        s, e = max(lo - seen, 0), min(hi - seen, n)
        if s < e:
            out.append((a + s, a + e))
        seen += n
        if seen >= hi:
            break
    return out


def rank_intervals(total: int, consumed: Intervals, world_size: int, rank: int) -> Intervals:
    """The intervals of the global order this rank reads, in order: its equal, contiguous share of what is left."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    left = _left(total, consumed)
    per = sum(b - a for a, b in left) // world_size
    return _nth(left, rank * per, (rank + 1) * per)


def rank_block(total: int, consumed: Intervals, world_size: int, rank: int) -> np.ndarray:
    """Positions of the global order this rank reads, in order (`rank_intervals` as an array)."""
    spans = rank_intervals(total, consumed, world_size, rank)
    return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in spans]) if spans else np.zeros(0, np.int64)


def consumed_after(total: int, consumed: Intervals, world_size: int, samples_per_rank: int) -> Intervals:
    """The intervals consumed once every rank of a `world_size` job read `samples_per_rank` of its block (ranks
    of a data-parallel job advance together, so any one rank's count says it for all). Interval arithmetic: the
    cost is the number of ranks and intervals, not the epoch's length."""
    left = _left(total, consumed)
    per = sum(b - a for a, b in left) // world_size
    done = [(max(0, a), min(total, b)) for a, b in consumed]
    for r in range(world_size):
        done += _nth(left, r * per, r * per + min(per, samples_per_rank))
    merged: Intervals = []
    for a, b in sorted(x for x in done if x[0] < x[1]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return [(int(a), int(b)) for a, b in merged]


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
    for s, x in enumerate(sources):
        if x.take > x.count and not x.repeat:
            raise ValueError(f"source {s} gives {x.count} samples but {x.take} are asked per epoch; set repeat=True")
    total = sum(x.take for x in sources)
    passes: dict = {}
    parts = [
        epoch_slice(sources, seed=seed, epoch=epoch, open_shards=open_shards, a=a, b=b, passes=passes)
        for a, b in rank_intervals(total, list(consumed), world_size, rank)
    ]
    empty = np.zeros(0, np.int32)
    return EpochPlan(
        epoch=epoch,
        rank=rank,
        world_size=world_size,
        shard=np.concatenate([p[1] for p in parts]) if parts else empty,
        sample=np.concatenate([p[2] for p in parts]) if parts else empty,
        source=np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int16),
        total=total,
    )
