"""The epoch plan: equal work per rank, every sample once, reshuffled per epoch, deterministic; mixtures with their
weights; epoch sizes and subsets; elastic resume on another number of ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loaders.mixture import Source, source_plans
from loaders.plan import SourcePlan, consumed_after, epoch_order, plan_epoch
from loaders.subset import Subset

SIZES = st.lists(st.integers(1, 60), min_size=1, max_size=30)


def pairs(plan) -> list[tuple[int, int]]:
    return list(zip(plan.shard.tolist(), plan.sample.tolist(), strict=True))


@settings(max_examples=150, deadline=None)
@given(SIZES, st.sampled_from([1, 2, 3, 4, 8]), st.integers(0, 2**31), st.integers(0, 5))
def test_ranks_get_equal_work_and_disjoint_samples(sizes, world, seed, epoch):
    plans = [plan_epoch(sizes, seed=seed, epoch=epoch, world_size=world, rank=r) for r in range(world)]
    assert len({len(p) for p in plans}) == 1, "every rank must get the same number of samples"
    seen = [x for p in plans for x in pairs(p)]
    assert len(seen) == len(set(seen)), "a sample was given to two ranks or twice"
    assert all(0 <= i < sizes[s] for s, i in seen)
    assert sum(sizes) - len(seen) < world  # the remainder: fewer samples than ranks


def test_epochs_reshuffle_seeds_repeat_and_a_batch_mixes_shards():
    sizes = [50] * 16
    a0 = plan_epoch(sizes, seed=1, epoch=0, world_size=2, rank=0)
    a1 = plan_epoch(sizes, seed=1, epoch=1, world_size=2, rank=0)
    assert pairs(a0) == pairs(plan_epoch(sizes, seed=1, epoch=0, world_size=2, rank=0))
    assert pairs(a0) != pairs(a1)
    assert len(set(a0.shard[:32].tolist())) >= 4
    # a rank reads its own block of shards: about half of them, not all (one node's cache holds its share)
    assert len(set(a0.shard.tolist())) <= 10


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(SIZES, st.floats(0.1, 10)), min_size=2, max_size=4),
    st.integers(0, 2**31),
    st.integers(0, 3),
)
def test_mixture_proportions_follow_the_weights_and_no_sample_repeats(sources, seed, epoch):
    specs = [Source(f"s{i}", weight=w, repeat=True) for i, (_, w) in enumerate(sources)]
    size = sum(sum(sz) for sz, _ in sources)  # weights are shares of an epoch_size (without it: every sample once)
    plans = source_plans(specs, [sz for sz, _ in sources], seed=seed, epoch_size=size)
    src, shard, sample = epoch_order(plans, seed=seed, epoch=epoch, open_shards=8)
    total = len(src)
    assert total == sum(sum(sz) for sz, _ in sources)
    weights = np.array([w for _, w in sources])
    for s, p in enumerate(weights / weights.sum()):
        binomial = 3 * math.sqrt(total * p * (1 - p)) + 1
        assert abs(int((src == s).sum()) - total * p) <= binomial
        if plans[s].take <= plans[s].count:  # without replacement: no sample twice in the epoch
            got = list(zip(shard[src == s].tolist(), sample[src == s].tolist(), strict=True))
            assert len(got) == len(set(got))
    # evenly interleaved: each quarter of the epoch holds each source near its share
    for part in np.array_split(src, 4):
        for s, p in enumerate(weights / weights.sum()):
            assert abs((part == s).sum() - len(part) * p) <= 2 + 3 * math.sqrt(len(part) * p)


@settings(max_examples=150, deadline=None)
@given(
    SIZES,
    st.sampled_from([1, 2, 3, 4, 8]),
    st.sampled_from([1, 2, 3, 4, 8]),
    st.integers(0, 2**31),
    st.floats(0, 1),
    st.integers(1, 8),
)
def test_elastic_resume_covers_the_rest_of_the_epoch_once(sizes, w_old, w_new, seed, progress, batch):
    total = sum(sizes)
    before = [plan_epoch(sizes, seed=seed, epoch=3, world_size=w_old, rank=r) for r in range(w_old)]
    per_rank = len(before[0])
    read = int(progress * (per_rank // batch)) * batch  # batches every old rank has read
    consumed = consumed_after(total, [], w_old, read)
    after = [plan_epoch(sizes, seed=seed, epoch=3, world_size=w_new, rank=r, consumed=consumed) for r in range(w_new)]
    assert len({len(p) for p in after}) == 1, "equal work per new rank"
    done = [x for p in before for x in pairs(p)[:read]]
    rest = [x for p in after for x in pairs(p)]
    assert len(done) + len(rest) == len(set(done) | set(rest)), "a sample read twice in the epoch"
    assert total - len(done) - len(rest) < w_new, "the rest of the epoch is covered but for the remainder"
    # and again: a second change of world size in the same epoch
    consumed2 = consumed_after(total, consumed, w_new, len(after[0]) // 2)
    again = [x for r in range(w_old)
             for x in pairs(plan_epoch(sizes, seed=seed, epoch=3, world_size=w_old, rank=r, consumed=consumed2))]  # fmt: skip
    half = [x for p in after for x in pairs(p)[: len(after[0]) // 2]]
    assert len(done) + len(half) + len(again) == len(set(done) | set(half) | set(again))


def test_epoch_size_draws_without_repetition_across_epochs_until_the_data_is_used():
    sizes = [10] * 10  # 100 samples, 30 per epoch: three disjoint epochs, then a new pass
    plans = source_plans([Source("a")], [sizes], seed=0, epoch_size=30)
    epochs = [pairs(plan_epoch(plans, seed=0, epoch=e, world_size=1, rank=0)) for e in range(4)]
    assert all(len(e) == 30 for e in epochs)
    first_pass = [x for e in epochs[:3] for x in e]
    assert len(set(first_pass)) == 90
    assert len(set(epochs[3])) == 30 and set(epochs[3]) != set(epochs[0])


def test_subset_is_fixed_and_seeded():
    sizes = [20] * 10
    plans = source_plans([Source("a", subset=0.25)], [sizes], seed=5, epoch_size=None)
    e0, e1 = (set(pairs(plan_epoch(plans, seed=5, epoch=e, world_size=1, rank=0))) for e in (0, 1))
    assert len(e0) == 50 and e0 == e1
    other = source_plans([Source("a", subset=0.25)], [sizes], seed=6, epoch_size=None)
    assert set(pairs(plan_epoch(other, seed=6, epoch=0, world_size=1, rank=0))) != e0


def test_a_subset_of_2b_samples_is_exact_and_held_as_counts_per_shard():
    sizes = [10_000] * 200_000  # beyond one hypergeometric draw (< 10**9): groups of shards are split first
    sub = Subset.draw(sizes, 123_456_789, seed=3, s=0)
    assert sub.counts.sum() == 123_456_789 and sub.counts.min() >= 0 and sub.counts.max() <= 10_000
    assert sub.counts.nbytes == 8 * 200_000  # no per-sample array
    picked = sub.samples(17, 10_000)
    assert len(picked) == sub.counts[17] == len(np.unique(picked)) and picked.max() < 10_000
    assert np.array_equal(picked, Subset.draw(sizes, 123_456_789, seed=3, s=0).samples(17, 10_000))


@pytest.mark.parametrize("group", [10**9 - 1, 8])  # one hypergeometric draw; groups of shards split binomially
def test_a_subset_draws_every_sample_equally_often(monkeypatch, group):
    monkeypatch.setattr("loaders.subset._MARGINALS", group)
    sizes, n, draws = [3, 5, 2, 7], 6, 3000
    hits = np.zeros(sum(sizes))
    for seed in range(draws):
        sub = Subset.draw(sizes, n, seed, 0)
        ids = np.concatenate(
            [sub.samples(i, k) + off for i, (k, off) in enumerate(zip(sizes, [0, 3, 8, 10], strict=True))]
        )
        assert len(np.unique(ids)) == n
        hits[ids] += 1
    assert np.allclose(hits / draws, n / sum(sizes), atol=0.04)  # 4.6 standard deviations


@pytest.mark.parametrize(
    ("sources", "kwargs", "message"),
    [
        ([Source("a", weight=-1), Source("b")], {}, "a: weight=-1 must be a number >= 0"),
        ([Source("a", weight=float("nan")), Source("b")], {}, "a: weight=nan"),
        ([Source("a", weight=0), Source("b", weight=0)], {}, "weights of .* are all 0"),
        (
            [Source("a"), Source("b", weight=9)],
            {"epoch_size": 40},
            "b: 36 samples per epoch are asked of a source of 20; set repeat",
        ),
        ([Source("a", subset=1.5)], {}, "a: subset=1.5 must be a fraction"),
        ([Source("a", samples=50), Source("b")], {"epoch_size": 40}, "smaller than the sources' fixed samples"),
    ],
)
def test_bad_mixtures_are_clear_errors(sources, kwargs, message):
    with pytest.raises(ValueError, match=message):
        source_plans(sources, [[10, 10]] * len(sources), seed=0, epoch_size=kwargs.get("epoch_size"))
    with pytest.raises(ValueError, match="the source has no samples"):
        source_plans([Source("empty")], [[0]], seed=0, epoch_size=None)


@pytest.mark.parametrize("weights", [(0.5, 0.3, 0.2), (1, 1, 1), (None, None, None), (9, 0.1, 3)])
def test_without_epoch_size_an_epoch_is_every_sample_of_every_source_once_whatever_the_weights(weights):
    sizes = [[121, 121], [80, 80], [60, 60]]  # 242, 160 and 120 samples
    sources = [Source(f"s{i}", weight=w) for i, w in enumerate(weights)]
    plans = source_plans(sources, sizes, seed=0, epoch_size=None)
    assert [p.take for p in plans] == [242, 160, 120]
    p = plan_epoch(plans, seed=0, epoch=0, world_size=1, rank=0)
    pairs = set(zip(p.shard.tolist(), p.sample.tolist(), strict=True))
    assert len(p) == len(pairs) == 522  # every sample once


def _whole_epoch_block(sources, seed, epoch, world, rank, open_shards, consumed):
    """The plan as it was first written: the whole epoch's order materialized, then the rank's share of what
    `consumed` leaves. The per-rank plan must equal it exactly (so states saved before it stay valid)."""
    src, shard, sample = epoch_order(sources, seed=seed, epoch=epoch, open_shards=open_shards)
    left = np.ones(len(shard), bool)
    for a, b in consumed:
        left[a:b] = False
    left = np.flatnonzero(left)
    per = len(left) // world
    mine = left[rank * per : (rank + 1) * per]
    return src[mine], shard[mine], sample[mine]


@settings(max_examples=120, deadline=None)
@given(
    st.lists(st.tuples(SIZES, st.integers(0, 2), st.booleans()), min_size=1, max_size=3),
    st.integers(0, 2**31),
    st.integers(0, 4),
    st.sampled_from([1, 2, 3, 8]),
    st.integers(1, 6),
    st.integers(0, 4),
)
def test_each_rank_computes_exactly_its_block_of_the_whole_epoch(sources, seed, epoch, open_shards, world, stop):
    """The per-rank plan (only the rank's ranges of the order are made: O(shards + own samples)) equals the whole
    epoch's order cut into blocks, for one source or a mixture, every sample, fewer (epoch_size) or more (repeat),
    subsets, and after an elastic resume."""
    plans = []
    for i, (sizes, kind, subset) in enumerate(sources):
        chosen = None
        if subset:
            chosen = source_plans(
                [Source(f"s{i}", subset=max(1, sum(sizes) // 2))], [sizes], seed=seed, epoch_size=None
            )
            chosen = chosen[0].subset
        count = int(chosen.counts.sum()) if chosen is not None else sum(sizes)
        take = [count, max(1, count // 3), 2 * count + 1][kind]
        plans.append(SourcePlan(tuple(sizes), take=take, repeat=kind == 2, subset=chosen))
    total = sum(p.take for p in plans)
    consumed = consumed_after(total, [], world + 1, stop * 3) if stop else []
    for rank in range(world):
        got = plan_epoch(
            plans, seed=seed, epoch=epoch, world_size=world, rank=rank, open_shards=open_shards, consumed=consumed
        )
        want = _whole_epoch_block(plans, seed, epoch, world, rank, open_shards, consumed)
        assert got.total == total
        assert np.array_equal(got.source, want[0]) and np.array_equal(got.shard, want[1])
        assert np.array_equal(got.sample, want[2])


@pytest.mark.slow
def test_20m_samples_64_ranks_3_sources_elastic_to_48_covered_exactly_from_per_rank_calls():
    """At a size where every rank ordering the whole epoch would cost each rank seconds and GBs: all 64 ranks'
    blocks, then a resume on 48 ranks mid-epoch, each from its own `plan_epoch` call; from the outside, what they
    read together is every sample of the epoch once, but for the remainder (< 48)."""
    sizes = [(1250,) * 8000, (1000,) * 6000, (2500,) * 1600]  # 10 M + 6 M + 4 M samples
    plans = [SourcePlan(s, take=sum(s)) for s in sizes]
    total = sum(p.take for p in plans)
    offsets = np.cumsum([0, *(len(s) for s in sizes)])
    bases = np.cumsum([0, *(sum(s) for s in sizes)])

    def ids(p):  # a sample's number in the whole epoch: its source's base + its place in the source
        shard_in_source = p.shard - offsets[p.source]
        per = np.array([s[0] for s in sizes])[p.source]
        return bases[p.source] + shard_in_source.astype(np.int64) * per + p.sample

    read_per_rank = 100_000
    first = [plan_epoch(plans, seed=5, epoch=2, world_size=64, rank=r) for r in range(64)]
    assert len({len(p) for p in first}) == 1 and len(first[0]) > read_per_rank
    consumed = consumed_after(total, [], 64, read_per_rank)
    after = [plan_epoch(plans, seed=5, epoch=2, world_size=48, rank=r, consumed=consumed) for r in range(48)]
    assert len({len(p) for p in after}) == 1
    seen = np.zeros(total, bool)
    for chunk in [ids(p)[:read_per_rank] for p in first] + [ids(p) for p in after]:
        assert len(np.unique(chunk)) == len(chunk) and not seen[chunk].any(), "a sample was read twice"
        seen[chunk] = True
    assert 0 <= total - int(seen.sum()) < 48, "samples left out beyond the remainder"
