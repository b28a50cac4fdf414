"""The loader's epoch plan: equal work per rank, every sample once, reshuffled per epoch, deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loaders.plan import plan_epoch


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 60), min_size=4, max_size=40),
    st.sampled_from([1, 2, 4]),
    st.integers(0, 2**31),
    st.integers(0, 5),
)
def test_ranks_get_equal_work_and_disjoint_samples(sizes, world, seed, epoch):
    plans = [plan_epoch(sizes, seed=seed, epoch=epoch, world_size=world, rank=r) for r in range(world)]
    assert len({len(p) for p in plans}) == 1, "every rank must get the same number of samples"
    seen = [(int(s), int(i)) for p in plans for s, i in zip(p.shard, p.sample, strict=True)]
    assert len(seen) == len(set(seen)), "a sample was given to two ranks or twice"
    assert all(0 <= i < sizes[s] for s, i in seen)
    # the remainder is bounded: what is skipped is less than one largest shard per rank
    assert sum(sizes) - len(seen) <= (world - 1) * max(sizes)
    if world == 1:
        assert len(seen) == sum(sizes)


def test_epochs_reshuffle_and_seeds_repeat():
    sizes = [50] * 16
    a0 = plan_epoch(sizes, seed=1, epoch=0, world_size=2, rank=0)
    a0_again = plan_epoch(sizes, seed=1, epoch=0, world_size=2, rank=0)
    a1 = plan_epoch(sizes, seed=1, epoch=1, world_size=2, rank=0)
    assert np.array_equal(a0.shard, a0_again.shard) and np.array_equal(a0.sample, a0_again.sample)
    assert not np.array_equal(a0.shard, a1.shard) or not np.array_equal(a0.sample, a1.sample)
    # a batch of 32 mixes several shards, not a run of one
    assert len(set(a0.shard[:32].tolist())) >= 4


def test_too_few_shards_for_the_ranks_is_a_clear_error():
    with pytest.raises(ValueError, match="3 shards cannot be split among 4 ranks"):
        plan_epoch([5, 5, 5], seed=0, epoch=0, world_size=4, rank=0)
