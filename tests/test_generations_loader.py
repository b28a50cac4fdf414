"""Loaders over a split that grows: pinned generations, follow=True at epoch boundaries, exact resume across a
generation change, and compaction under a reader that is mid-epoch."""

from __future__ import annotations

import pytest

pytest.importorskip("apache_beam", reason="Beam is not installed (pip install '.[beam]')")
import torch

from loaders import imagenet_dali
from shards.compact import compact
from shards.errors import ManifestError
from shards.generations import collect, read_generation
from shards.manifest import read_manifest
from shards.verify import verify_split
from tests.splits import read_samples
from tests.watching import POOL, add_photos, watcher


def loader(url, **kw):
    return imagenet_dali(url, batch_size=8, train=True, device="cpu", image_size=32, num_threads=1,
                         return_keys=True, seed=3, **kw)  # fmt: skip


def run(it, n=None):
    out = []
    for b in it:
        out.append((list(b["key"]), b["image"].clone(), b["label"].clone()))
        if n is not None and len(out) == n:
            break
    return out


def same(a, b) -> bool:
    return len(a) == len(b) and all(x[0] == y[0] and torch.equal(x[1], y[1]) and torch.equal(x[2], y[2])
                                    for x, y in zip(a, b, strict=True))  # fmt: skip


@pytest.fixture
def growing(tmp_path):
    """A split with generations 1 and 2 (40 images each), and its watcher to publish more."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    (raw / "train").mkdir(parents=True)
    w = watcher(raw, out)
    keys = {1: add_photos(raw, 0, 40)}
    assert w.tick(POOL.submit).generation == 1
    keys[2] = add_photos(raw, 100, 40)
    assert w.tick(POOL.submit).generation == 2
    return raw, out / "train", w, keys


def test_follow_sees_new_generations_at_epoch_boundaries_and_resumes_exactly_across_them(growing):
    raw, split, w, keys = growing
    pinned = loader(str(split), generation=1)
    assert {k for b in run(pinned) for k in b[0]} <= keys[1] and len(pinned) == 5
    follow = loader(str(split), follow=True)
    assert {k for b in run(follow) for k in b[0]} == keys[1] | keys[2]  # 80 samples, 10 full batches
    keys[3] = add_photos(raw, 200, 24)
    assert w.tick(POOL.submit).generation == 3
    it = iter(follow)  # epoch 1 is planned over generation 3
    head = run(it, 5)
    state = follow.state_dict()
    tail = run(it)
    assert follow.generation == state["generation"] == 3 and len(follow) == 13
    assert {k for b in head + tail for k in b[0]} == keys[1] | keys[2] | keys[3]
    add_photos(raw, 300, 8)
    assert w.tick(POOL.submit).generation == 4
    resumed = loader(str(split), follow=True)  # constructed on generation 4; the state moves it back to 3
    resumed.load_state_dict(state)
    assert resumed.generation == 3 and same(run(resumed), tail)
    assert len(run(resumed)) == 14 and resumed.generation == 4  # the next epoch follows to generation 4
    with pytest.raises(ValueError, match="do not also pin generation"):
        loader(str(split), follow=True, generation=1)


def test_compaction_keeps_every_sample_once_and_a_reader_mid_epoch_finishes_its_epoch(growing):
    raw, split, w, keys = growing
    keys[3] = add_photos(raw, 200, 24)
    assert w.tick(POOL.submit).generation == 3
    before = read_samples(split)
    reference = run(loader(str(split)))
    reader = loader(str(split))
    it = iter(reader)
    head = run(it, 4)
    report = compact(str(split), shard_size=10_000_000)
    assert report.generation == 4 and report.replaced == [1, 2] and report.shards_after < report.shards_before
    assert same(head + run(it), reference)  # the retired shards stay for the grace period
    m = read_manifest(str(split))
    assert [g["generation"] for g in m["generations"]] == [3, 4] and read_samples(split) == before
    assert m["source"]["inputs_seen"] == 104 == m["num_samples"] + m["quarantine"]["count"]
    assert verify_split(str(split)).ok, verify_split(str(split)).problems
    assert w.tick(POOL.submit).generation is None  # the watcher still knows every input as converted
    assert collect(str(split), grace=3600) == []
    assert len(collect(str(split), grace=0)) == 2 and not list(split.glob("inc-*/shard-*"))[3:]
    with pytest.raises(ManifestError, match="compacted into generation 4 and collected"):
        read_generation(str(split), 2)
    assert {k for b in run(loader(str(split))) for k in b[0]} == keys[1] | keys[2] | keys[3]
    assert verify_split(str(split)).ok


def test_compaction_of_arrow_generations_keeps_every_row(tmp_path):
    import functools

    import pyarrow as pa

    from pipelines.common.increments import SplitWatcher
    from pipelines.common.sharding import SplitPlan
    from pipelines.youtube8m import WatchedRecords, YouTube8MConfig, encode_sample, schema
    from shards.arrow import schema_to_json
    from tests.raw import youtube8m as yt8m_raw

    raw, out = tmp_path / "raw", tmp_path / "out"
    plan = SplitPlan(dataset="youtube8m", split="train", split_url=str(out / "train"), classes=None, source={"url": "raw"},
                     fields=dict(sorted(schema_to_json(schema("video")).items())), params={"level": "video"}, seed=0,
                     shard_size=256_000_000, min_shards=1, max_bad_fraction=0.0, format="arrow")  # fmt: skip
    encode = functools.partial(encode_sample, cfg=YouTube8MConfig(level="video"))
    w = SplitWatcher(plan, WatchedRecords(str(raw), "video"), encode, settle=0)
    for i, n in enumerate((12, 9, 7)):
        yt8m_raw.write(tmp_path / f"wave{i}", frame=False, files={f"train{i:04d}": n})
        (raw / "video").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"wave{i}" / "video" / f"train{i:04d}.tfrecord").rename(raw / "video" / f"train{i:04d}.tfrecord")
        assert w.tick(POOL.submit).generation == i + 1

    def rows() -> dict:
        m = read_manifest(str(out / "train"))
        tables = [pa.ipc.open_file(str(out / "train" / s["path"])).read_all() for s in m["shards"]]
        return {r["id"]: r for t in tables for r in t.to_pylist()}

    before = rows()
    r = compact(str(out / "train"))
    assert r.replaced == [1, 2] and r.shards_after == 1 and rows() == before and len(before) == 28
    assert verify_split(str(out / "train")).ok


def test_ranks_that_cannot_agree_on_a_generation_are_refused_and_pinned_ranks_read_one(growing):
    raw, split, w, keys = growing
    with pytest.raises(ValueError, match=r"grows by generations .* pass generation=2 to every rank"):
        loader(str(split), rank=0, world_size=2)
    rank0 = loader(str(split), rank=0, world_size=2, generation=2)
    keys[3] = add_photos(raw, 200, 24)  # published between the two ranks' start
    assert w.tick(POOL.submit).generation == 3
    rank1 = loader(str(split), rank=1, world_size=2, generation=2)
    read = [k for r in (rank0, rank1) for b in run(r) for k in b[0]]
    assert len(read) == len(set(read)) == 80 and set(read) == keys[1] | keys[2]
