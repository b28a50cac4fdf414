"""Mixtures: one loader over several splits, each with a weight or a number of samples per epoch.

    from loaders import Source, imagenet_dali, mix
    loader = imagenet_dali(mix(Source("s3://a/train", weight=3), Source("s3://b/train", weight=1, repeat=True)),
                           batch_size=256, epoch_size=500_000)
    for batch in loader:  # batch["source"]: which source each sample came from (0, 1, ...)

Sources must give the loader's fields with the same meaning (the manifests' `fields` entries agree): splits of
one dataset kind, or any split with the fields the graph reads (a `shards pack` folder of jpg + cls mixes with
ImageNet). Labels are kept apart, not mapped: each source's class ids are its own (`loader.sources[i].classes`),
and `batch["source"]` tells which label space a row's label belongs to.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any

import numpy as np

from loaders.entries import Chained
from loaders.plan import SourcePlan
from loaders.reading import Ragged
from loaders.subset import Subset

__all__ = ["MissingFields", "Mixture", "MixedReader", "Source", "first_url", "mix", "open_sources", "source_plans"]


class MissingFields(ValueError):
    """A split lacks fields a loader reads (its job wrote no such annotation, or it is another dataset's)."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One split of a mixture: `weight` (a share of the epoch) or `samples` (per epoch, absolute); `repeat` lets it
    give more samples per epoch than it has (with replacement); `subset` keeps a fixed, seeded part of it (a
    fraction in (0, 1] or a count); `generation` pins one generation of a split that grows."""

    url: str
    weight: float | None = None
    samples: int | None = None
    repeat: bool = False
    subset: float | int | None = None
    generation: int | None = None


@dataclasses.dataclass(frozen=True)
class Mixture:
    sources: tuple[Source, ...]


def mix(*sources: Source | str | tuple[str, float]) -> Mixture:
    """A mixture of sources: `Source(...)`, a URL (weight 1), or (URL, weight)."""
    out = []
    for s in sources:
        if isinstance(s, str):
            s = Source(s, weight=1.0)
        elif isinstance(s, tuple):
            s = Source(s[0], weight=float(s[1]))
        if not isinstance(s, Source):
            raise ValueError(f"a mixture takes Source(...), a URL or (URL, weight), not {s!r}")
        out.append(s)
    if not out:
        raise ValueError("a mixture needs at least one source")
    return Mixture(tuple(out))


def _subset(sizes: Sequence[int], subset: float | int, seed: int, s: int, url: str) -> Subset:
    total = int(sum(sizes))
    if isinstance(subset, float) and not isinstance(subset, bool):
        if not 0 < subset <= 1:
            raise ValueError(f"{url}: subset={subset} must be a fraction in (0, 1] or a count")
        n = max(1, round(subset * total))
    elif isinstance(subset, int) and not isinstance(subset, bool) and 1 <= subset <= total:
        n = subset
    else:
        raise ValueError(f"{url}: subset={subset!r} must be a fraction in (0, 1] or a count in 1..{total}")
    return Subset.draw(sizes, n, seed, s)


def source_plans(
    sources: Sequence[Source], sizes: Sequence[Sequence[int]], *, seed: int, epoch_size: int | None
) -> list[SourcePlan]:
    """Each source's samples per epoch: with `epoch_size`, weights are shares of what the `samples=` sources leave
    (rounded to add up exactly); without it, every sample of each weighted source once (weights then change
    nothing: the interleave is even in proportion to what each source gives)."""
    members = [
        _subset(sz, s.subset, seed, i, s.url) if s.subset is not None else None
        for i, (s, sz) in enumerate(zip(sources, sizes, strict=True))
    ]
    counts = [int(m.counts.sum()) if m is not None else int(sum(sz)) for m, sz in zip(members, sizes, strict=True)]
    for s, n in zip(sources, counts, strict=True):
        if n == 0:
            raise ValueError(f"{s.url}: the source has no samples")
    fixed = {i: s.samples for i, s in enumerate(sources) if s.samples is not None}
    for i, n in fixed.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"{sources[i].url}: samples={n!r} must be a whole number")
    weighted = [i for i in range(len(sources)) if i not in fixed]
    weights = [1.0 if sources[i].weight is None else sources[i].weight for i in weighted]
    for i, w in zip(weighted, weights, strict=True):
        if not isinstance(w, int | float) or isinstance(w, bool) or math.isnan(w) or w < 0 or math.isinf(w):
            raise ValueError(f"{sources[i].url}: weight={w!r} must be a number >= 0")
    if weighted and sum(weights) == 0:
        raise ValueError(f"the weights of {[sources[i].url for i in weighted]} are all 0")
    total = epoch_size if epoch_size is not None else sum(counts)
    share = total - sum(fixed.values())
    if weighted and share < 0:
        raise ValueError(f"epoch_size={total} is smaller than the sources' fixed samples ({sum(fixed.values())})")
    takes = dict(fixed)
    if weighted and epoch_size is None:  # no epoch size: every sample of every weighted source, once
        takes.update((i, counts[i]) for i in weighted)
    elif weighted:  # largest remainder: the takes add up to the epoch exactly
        exact = [share * w / sum(weights) for w in weights]
        floor = [math.floor(x) for x in exact]
        for j in sorted(range(len(exact)), key=lambda j: floor[j] - exact[j])[: share - sum(floor)]:
            floor[j] += 1
        takes.update(zip(weighted, floor, strict=True))
    plans = []
    for i, s in enumerate(sources):
        if takes[i] > counts[i] and not s.repeat:
            raise ValueError(
                f"{s.url}: {takes[i]} samples per epoch are asked of a source of {counts[i]}; set "
                "repeat=True (with replacement) or give it less weight"
            )
        plans.append(SourcePlan(tuple(int(x) for x in sizes[i]), takes[i], s.repeat, members[i]))
    return plans


def first_url(url: str | Mixture) -> str:
    """The URL of a split, or of a mixture's first source (whose manifest describes the mixture's fields)."""
    return url.sources[0].url if isinstance(url, Mixture) else url


def open_sources(
    specs: Sequence[Source],
    generations: Sequence[int | None],
    fields: Sequence[str],
    cache: Any,
    *,
    seed: int,
    epoch_size: int | None,
) -> tuple[list[dict[str, Any]], Any, list[SourcePlan]]:
    """(manifests, one reader over all sources, plans) of these generations; ValueError naming the source whose
    fields are missing or disagree with the first source's."""
    from loaders.reading import ArrowSampleReader, SampleReader
    from shards.generations import read_generation
    from shards.manifest import split_url_of

    manifests, readers = [], []
    for spec, g in zip(specs, generations, strict=True):
        url = split_url_of(spec.url)
        m = read_generation(url, g)
        missing = [f for f in fields if f not in m["fields"]]
        if missing:
            raise MissingFields(f"{url}: the split has no field(s) {missing}; it has {list(m['fields'])}")
        if manifests:
            first = manifests[0]
            for f in fields:
                if m["fields"][f] != first["fields"][f]:
                    raise ValueError(
                        f"{url}: field {f!r} is {m['fields'][f]!r} here but {first['fields'][f]!r} in "
                        f"{split_url_of(specs[0].url)}; mixed sources must agree"
                    )
        arrow = _arrow(m)
        if manifests and arrow != _arrow(manifests[0]):
            raise ValueError(f"{url}: Arrow and tar splits cannot be mixed")
        manifests.append(m)
        readers.append((ArrowSampleReader if arrow else SampleReader)(url, m, cache))
    plans = source_plans(specs, [r.sizes() for r in readers], seed=seed, epoch_size=epoch_size)
    return manifests, (readers[0] if len(readers) == 1 else MixedReader(readers)), plans


def _arrow(manifest: dict[str, Any]) -> bool:
    shards = manifest["shards"]
    return bool(len(shards)) and shards[0]["path"].endswith(".arrow")


class MixedReader:
    """The readers of several sources behind one shard numbering (source s's shard i is `offsets[s] + i`)."""

    def __init__(self, readers: Sequence[Any]):
        self.readers = list(readers)
        self.offsets = np.cumsum([0, *(len(r.urls) for r in self.readers)])
        self.urls = Chained([r.urls for r in self.readers])

    def _local(self, shard: int) -> tuple[Any, int]:
        s = int(np.searchsorted(self.offsets, shard, side="right") - 1)
        return self.readers[s], shard - int(self.offsets[s])

    def sizes(self) -> list[int]:
        return [n for r in self.readers for n in r.sizes()]

    def job(self, shard: int):
        reader, local = self._local(shard)
        return reader.job(local)

    def key(self, shard: int, sample: int) -> str:
        reader, local = self._local(shard)
        return reader.key(local, sample)

    def forget(self, shards: Sequence[int]) -> None:
        for s in shards:
            reader, local = self._local(s)
            reader.forget([local])

    def read_batch(
        self,
        shards: np.ndarray,
        samples: np.ndarray,
        fields: Sequence[str],
        *,
        parsers: Mapping[str, Callable | None] | None = None,
        ragged: Set[str] = frozenset(),
    ) -> list[Any]:
        """Each source's rows read by its reader, put back in plan order."""
        n = len(shards)
        src = np.searchsorted(self.offsets, shards, side="right") - 1
        parts = []
        for s in np.unique(src).tolist():
            where = np.flatnonzero(src == s)
            local = shards[where] - self.offsets[s]
            parts.append(
                (where, self.readers[s].read_batch(local, samples[where], fields, parsers=parsers, ragged=ragged))
            )
        if len(parts) == 1:
            return parts[0][1]
        return [_merge(n, [(where, cols[f]) for where, cols in parts]) for f in range(len(fields))]


def _merge(n: int, parts: list[tuple[np.ndarray, Any]]) -> Any:
    """One batch column from the columns of several sources, rows back in plan order."""
    first = parts[0][1]
    if isinstance(first, np.ndarray) and all(
        isinstance(p, np.ndarray) and p.shape[1:] == first.shape[1:] and p.dtype == first.dtype for _, p in parts
    ):
        out = np.empty((n, *first.shape[1:]), first.dtype)
        for where, p in parts:
            out[where] = p
        return out
    if isinstance(first, Ragged):
        rows: list[Any] = [None] * n
        for where, p in parts:
            bounds = np.concatenate([[0], np.cumsum(p.lengths)])
            for d, a, b in zip(where.tolist(), bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                rows[d] = p.values[a:b]
        return Ragged(np.concatenate(rows) if rows else first.values[:0], np.array([len(r) for r in rows], np.int64))
    out_list: list[Any] = [None] * n
    for where, p in parts:
        for d, v in zip(where.tolist(), list(p), strict=True):
            out_list[d] = v
    return out_list
