"""`imagenet_dali` on the CPU: reference equality (eval), ranks, epochs, resume, and errors that name the shard."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from infra.photos import photo_jpeg
from loaders import imagenet_dali
from loaders.imagenet import IMAGENET_STD, reference_eval
from shards.manifest import build_manifest, write_manifest
from shards.publish import write_tar_shard
from shards.wds import iter_samples
from tests.devices import GPU

pytest.importorskip("nvidia.dali", reason="DALI is not installed (pip install '.[dali]')")

N_SHARDS, PER_SHARD = 8, 12


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """An ImageNet-format split (jpg, cls, json) of photo-like JPEGs in 8 shards, written with shards/."""
    url = tmp_path_factory.mktemp("imagenet") / "train"
    entries = []
    for s in range(N_SHARDS):
        samples = []
        for i in range(PER_SHARD):
            k = s * PER_SHARD + i
            w, h = 96 + 8 * (k % 5), 72 + 6 * (k % 3)
            meta = json.dumps({"wnid": "n0", "name": f"k{k}.JPEG"}).encode()
            samples.append((f"k{k:04d}", {"jpg": photo_jpeg(k, size=(w, h)), "cls": b"%d" % (k % 10), "json": meta}))
        entries.append(write_tar_shard(str(url), s, samples))
    n = N_SHARDS * PER_SHARD
    m = build_manifest(
        dataset="imagenet",
        split="train",
        fields={"jpg": "image/jpeg", "cls": "label", "json": "meta"},
        shards=entries,
        source={"url": "test", "inputs_seen": n},
        classes=[f"c{i}" for i in range(10)],
    )
    write_manifest(str(url), m)
    return url


def _keys(loader) -> list[list[str]]:
    return [b["key"] for b in loader]


DEVICES = ["cpu", pytest.param(GPU, marks=pytest.mark.gpu, id="gpu")]


@pytest.mark.parametrize("device", DEVICES)
def test_eval_graph_matches_the_reference_decoder(split, device):
    loader = imagenet_dali(str(split), batch_size=8, train=False, image_size=32, device=device, return_keys=True)
    reference = {}
    for entry in loader.manifest["shards"]:
        with open(split / entry["path"], "rb") as f:
            for key, sample in iter_samples(io.BytesIO(f.read())):
                reference[key] = reference_eval(sample, image_size=32)
    n = 0
    for batch in loader:
        assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.float32
        assert batch["label"].dtype == torch.int64
        for j, key in enumerate(batch["key"]):
            ref = reference[key]
            assert int(batch["label"][j]) == ref["label"]
            # in pixel levels (0-255): DALI's antialiased linear resize and PIL's bilinear differ by rounding
            image = batch["image"][j].cpu().numpy()
            levels = np.abs(image - ref["image"]) * (np.array(IMAGENET_STD) * 255)[:, None, None]
            assert levels.mean() <= 3 and np.percentile(levels, 99) <= 20, (key, levels.mean(), levels.max())
            n += 1
    assert n == len(loader) * 8 == N_SHARDS * PER_SHARD


@pytest.mark.parametrize("world", [1, 2, 4])
def test_ranks_get_equal_batches_and_see_each_sample_once(split, world):
    per_rank = []
    for rank in range(world):
        loader = imagenet_dali(
            str(split),
            batch_size=4,
            train=True,
            image_size=32,
            device="cpu",
            rank=rank,
            world_size=world,
            return_keys=True,
        )
        keys = _keys(loader)
        assert len(keys) == len(loader)
        per_rank.append([k for b in keys for k in b])
    assert len({len(p) for p in per_rank}) == 1
    seen = [k for p in per_rank for k in p]
    assert len(seen) == len(set(seen))
    if world in (1, 2, 4):  # 8 equal shards split evenly: nothing is left over
        assert len(seen) == N_SHARDS * PER_SHARD


def test_epochs_reshuffle_and_seeds_repeat(split):
    a = imagenet_dali(str(split), batch_size=8, train=True, image_size=32, device="cpu", seed=3, return_keys=True)
    epoch0, epoch1 = _keys(a), _keys(a)
    b = imagenet_dali(str(split), batch_size=8, train=True, image_size=32, device="cpu", seed=3, return_keys=True)
    assert _keys(b) == epoch0
    assert epoch1 != epoch0
    assert sorted(k for b in epoch1 for k in b) == sorted(k for b in epoch0 for k in b)


def test_the_next_epochs_plan_is_made_in_the_background_while_the_last_batches_are_read(split):
    from loaders.plan import plan_epoch

    loader = imagenet_dali(str(split), batch_size=8, train=False, image_size=32, device="cpu", seed=4)
    batches = iter(loader)
    for _ in range(len(loader) - 2):
        next(batches)
    assert loader._ahead is None  # not before the epoch's last tenth
    for _ in batches:
        pass
    epoch, sources, made = loader._ahead
    assert epoch == 1 and sources is loader._plans
    iter(loader)  # epoch 1 starts with the plan made in the background
    assert loader._plan is made.result()
    fresh = plan_epoch(loader._plans, **loader._plan_args(1))
    assert np.array_equal(fresh.shard, loader._plan.shard) and np.array_equal(fresh.sample, loader._plan.sample)


@pytest.mark.parametrize("device", DEVICES)
def test_mid_epoch_resume_gives_exactly_the_next_batches(split, device):
    kwargs = dict(batch_size=8, train=True, image_size=32, device=device, seed=11, return_keys=True)
    a = imagenet_dali(str(split), **kwargs)
    it = iter(a)
    for _ in range(5):
        next(it)
    state = a.state_dict()
    expected = list(it)
    b = imagenet_dali(str(split), **kwargs)
    b.load_state_dict(state)
    got = list(b)
    assert [x["key"] for x in got] == [x["key"] for x in expected]
    for x, y in zip(got, expected, strict=True):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])


def test_corrupt_and_missing_shards_name_the_shard(split, tmp_path):
    import shutil

    bad = tmp_path / "train"
    shutil.copytree(split, bad)
    victim = bad / "shard-000003.tar"
    data = bytearray(victim.read_bytes())
    for j in range(600, len(data) - 2048, 997):  # scramble the JPEG data, keep the tar structure
        data[j] ^= 0x5A
    victim.write_bytes(bytes(data))
    loader = imagenet_dali(str(bad), batch_size=8, train=False, image_size=32, device="cpu")
    # scrambled headers are caught when the index is checked, scrambled JPEG data by the sha256 or the decoder:
    # either way the error names the shard and a sample key
    with pytest.raises(ValueError, match=r"shard-000003\.tar(:| \(member ')k\d+"):
        for _ in loader:
            pass
    victim.unlink()
    loader = imagenet_dali(str(bad), batch_size=8, train=False, image_size=32, device="cpu")
    with pytest.raises(ValueError, match=r"shard-000003\.tar.*shard is missing"):
        for _ in loader:
            pass


@pytest.mark.integration
def test_s3_split_streams_through_the_cache(split, tmp_path, s3_endpoint):
    from shards import storage

    url = "s3://test/loader/train"
    for p in split.iterdir():
        if p.is_file():
            storage.write_bytes(f"{url}/{p.name}", p.read_bytes())
    kwargs = dict(batch_size=8, train=False, image_size=32, device="cpu", return_keys=True)
    local = imagenet_dali(str(split), **kwargs)
    remote = imagenet_dali(url, cache_dir=str(tmp_path / "cache"), **kwargs)
    total = sum(e["num_bytes"] + (split / e["idx"]).stat().st_size for e in remote.manifest["shards"])
    first = [(b["key"], b["image"]) for b in remote]
    assert [k for k, _ in first] == _keys(local)
    assert remote.cache.bytes_fetched == total  # every shard and its index fetched once, whole
    local_again = imagenet_dali(str(split), **kwargs)
    for (_, a), b in zip(first, local_again, strict=True):
        assert torch.equal(a, b["image"])  # the same pixels from s3:// as from local disk
    second = [b["key"] for b in remote]  # epoch 2: a new order, all from the local cache
    assert remote.cache.bytes_fetched == total, "a warm cache must fetch nothing"
    assert sorted(k for b in second for k in b) == sorted(k for b, _ in first for k in b)


_RANK_SCRIPT = """
import json, sys
from loaders import imagenet_dali
loader = imagenet_dali(sys.argv[1], batch_size=4, train=True, image_size=32, device="cpu", return_keys=True,
                       cache_dir=sys.argv[2], num_threads=1)
epochs, fetched = [], []
for _ in range(2):
    epochs.append([list(b["key"]) for b in loader])
    fetched.append(loader.cache.bytes_fetched - sum(fetched))
json.dump({"len": len(loader), "rank": loader.rank, "epochs": epochs, "fetched": fetched}, sys.stdout)
"""


@pytest.mark.integration
def test_four_rank_processes_share_an_s3_split_and_a_node_cache(tmp_path, s3_endpoint):
    """4 ranks as separate processes (RANK/WORLD_SIZE, as torchrun sets them) read one s3:// split of unequal
    shards through one node-local cache: equal batches per rank, no sample twice, exactly the planned samples,
    and no shard fetched twice on the node."""
    import os
    import subprocess
    import sys

    from loaders.plan import plan_epoch
    from shards import storage

    url = "s3://test/ranks/train"
    sizes = [10, 14, 9, 17, 12, 11, 16, 13, 15]
    shards, keys_of = [], []
    for s, n in enumerate(sizes):
        samples = [
            (f"s{s}k{i:02d}", {"jpg": photo_jpeg(100 * s + i, size=(48, 40)), "cls": b"%d" % (i % 10), "json": b"{}"})
            for i in range(n)
        ]
        shards.append(write_tar_shard(url, s, samples))
        keys_of.append([k for k, _ in samples])
    m = build_manifest(
        dataset="imagenet",
        split="train",
        fields={"jpg": "image/jpeg", "cls": "label", "json": "meta"},
        shards=shards,
        source={"url": "test", "inputs_seen": sum(sizes)},
        classes=[f"c{i}" for i in range(10)],
    )
    write_manifest(url, m)
    env = {**os.environ, "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RANK_SCRIPT, url, str(tmp_path / "cache")],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(4)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out))
    assert [r["rank"] for r in results] == [0, 1, 2, 3]
    assert len({r["len"] for r in results}) == 1
    total_bytes = sum(e["num_bytes"] for e in m["shards"])
    for epoch in range(2):
        per_rank = [[k for b in r["epochs"][epoch] for k in b] for r in results]
        assert all(len(r["epochs"][epoch]) == results[0]["len"] for r in results), "unequal batch counts"
        seen = [k for p in per_rank for k in p]
        assert len(seen) == len(set(seen)), "a sample was read twice in one epoch"
        planned = set()
        for rank in range(4):
            plan = plan_epoch(sizes, seed=0, epoch=epoch, world_size=4, rank=rank)
            n = results[0]["len"] * 4  # batches x batch size: the rank's planned samples minus drop_last's tail
            planned |= {keys_of[s][i] for s, i in zip(plan.shard[:n], plan.sample[:n], strict=True)}
        assert set(seen) == planned
        assert len(seen) >= 0.8 * sum(sizes)  # the remainder (README: equal work per rank) stays small
    fetched = [sum(r["fetched"][e] for r in results) for e in range(2)]
    # one node, one cache: over both epochs each shard came over the network at most once (epoch 2 fetches
    # only shards epoch 1 did not reach, where the remainder skipped all their samples)
    index_bytes = sum(storage.size(f"{url}/{e['idx']}") for e in m["shards"])  # small: a rank may fetch its own
    assert fetched[0] + fetched[1] <= total_bytes + 4 * index_bytes, fetched
    assert fetched[1] < fetched[0]
    assert storage.listdir(url)  # the split is still there for the next job


def test_bad_loader_arguments_are_clear_errors(split):
    import subprocess
    import sys

    bad = [
        (dict(image_size=0), "image_size must be a whole number of at least 1, not 0"),
        (dict(batch_size=0), "batch_size must be a whole number of at least 1, not 0"),
        (dict(batch_size=2.5), "batch_size must be a whole number"),
        (dict(open_shards=0), "open_shards must be"),
        (dict(device="tpu"), "device must be 'cpu' or 'gpu'"),
        (dict(dtype="int8"), "dtype must be 'float32' or 'float16'"),
        (dict(batch_size=97), r"reads 96 samples an epoch, fewer than batch_size=97, so an epoch would yield no batch"),
        (dict(batch_size=50, world_size=2, rank=1), "rank 1 of 2 reads 48 samples an epoch, fewer than batch_size=50"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            imagenet_dali(str(split), **{"batch_size": 8, "device": "cpu", **kwargs})
    r = subprocess.run([sys.executable, "-m", "loaders.stream", "imagenet", str(split), "--batch-size", "1000"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "batch_size=1000" in r.stderr, r.stderr


def test_a_state_is_refused_when_the_split_was_replaced_or_the_state_is_not_one_a_loader_gave(split, tmp_path):
    import shutil

    here = tmp_path / "train"
    shutil.copytree(split, here)
    kwargs = dict(batch_size=8, train=False, image_size=32, device="cpu", seed=11)
    a = imagenet_dali(str(here), **kwargs)
    it = iter(a)
    next(it)
    state = a.state_dict()
    for bad, message in [
        ({**state, "batch": -5}, "state's batch is -5, not a whole number"),
        ({**state, "batch": 10**9}, "state's batch 1000000000 is past the end of its epoch"),
        ({**state, "world_size": 2, "batch": 10**9}, "past the end of its epoch"),
        ({**state, "rank": 3}, "do not fit together"),
        ({**state, "batch_size": 4}, "state was saved with batch_size=4"),
        ({k: v for k, v in state.items() if k != "epoch"}, "state lacks 'epoch'"),
    ]:
        with pytest.raises(ValueError, match=message):
            imagenet_dali(str(here), **kwargs).load_state_dict(bad)
    # the split at the same URL replaced by other data (the same sample count: the plan alone would not notice)
    shutil.rmtree(here)
    m = json.loads((split / "manifest.json").read_text())
    entries = []
    for s, entry in enumerate(m["shards"]):
        samples = [(f"z{s}_{i}", {"jpg": photo_jpeg(500 + s * 20 + i, size=(64, 48)), "cls": b"1", "json": b"{}"})
                   for i in range(entry["num_samples"])]  # fmt: skip
        entries.append(write_tar_shard(str(here), s, samples))
    write_manifest(str(here), {**m, "shards": entries})
    with pytest.raises(ValueError, match=r"state was saved over other data than .*train holds now"):
        imagenet_dali(str(here), **kwargs).load_state_dict(state)


def test_device_gpu_without_a_gpu_says_so_up_front(split, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without one, here or not
    with pytest.raises(ValueError, match=r'device="gpu" but no GPU was found .* use device="cpu"'):
        imagenet_dali(str(split), batch_size=8, device="gpu")
