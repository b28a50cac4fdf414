"""Elastic resume with real rank processes over s3:// on the loopback endpoint: a job of W ranks stops mid-epoch,
and W' ranks resumed from one rank's state read exactly the rest of the epoch; mixtures carry their sources."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest

from loaders.mixture import Source, source_plans
from loaders.plan import consumed_after, plan_epoch
from shards.manifest import write_manifest
from tests.splits import make_split, photo_shards

SCRIPT = """
import json, pickle, sys
from loaders import Source, imagenet_dali, mix
url, cache, state_in, state_out, stop = sys.argv[1:6]
urls = url.split(",")
src = mix(Source(urls[0], weight=2), Source(urls[1], weight=1)) if len(urls) > 1 else urls[0]
loader = imagenet_dali(src, batch_size=4, train=True, image_size=32, device="cpu", return_keys=True, cache_dir=cache,
                       num_threads=1, seed=11, epoch_size=60 if len(urls) > 1 else None)
if state_in != "-":
    loader.load_state_dict(pickle.load(open(state_in, "rb")))
batches = []
for b in loader:
    batches.append([list(b["key"]), b["source"].tolist() if "source" in b else None])
    if len(batches) == int(stop):
        break
if state_out != "-":
    pickle.dump(loader.state_dict(), open(state_out, "wb"))
json.dump({"batches": batches, "len": len(loader)}, sys.stdout)
"""

SIZES = {"a": [9, 14, 11, 12, 10, 13], "b": [7, 9, 8]}


@pytest.fixture(scope="module")
def splits(s3_endpoint):
    urls, keys = {}, {}
    for name, sizes in SIZES.items():
        shards = photo_shards(name, sizes)
        urls[name] = f"s3://test/elastic/{name}"
        make_split(urls[name], shards)
        keys[name] = [[k for k, _ in shard] for shard in shards]
    return urls, keys


def run_ranks(url: str, world: int, cache, *, state_in: str = "-", save: str = "-", stop: int = 10**9) -> list[dict]:
    env = {**os.environ, "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world)}
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, url, str(cache), state_in,
                               save.replace("RANK", str(r)), str(stop)], env={**env, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]  # fmt: skip
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout))
    return out


def epoch_size(names: list[str]) -> int | None:
    return 60 if len(names) > 1 else None  # a mixture of 40 + 20 samples an epoch: no source repeats


def expected(names: list[str], keys, world: int, consumed) -> list[list[str]]:
    """Each rank's keys of epoch 0 from the plan itself: the loader must read exactly these (less drop_last)."""
    specs = [Source(n, weight=w) for n, w in zip(names, (2, 1), strict=False)]
    plans = source_plans(specs, [SIZES[n] for n in names], seed=11, epoch_size=epoch_size(names))
    offsets = [0, len(SIZES[names[0]])]
    out = []
    for r in range(world):
        p = plan_epoch(plans, seed=11, epoch=0, world_size=world, rank=r, consumed=consumed)
        n = len(p) // 4 * 4
        out.append([keys[names[s]][g - offsets[s]][i] for s, g, i in
                    zip(p.source[:n].tolist(), p.shard[:n].tolist(), p.sample[:n].tolist(), strict=True)])  # fmt: skip
    return out


@pytest.mark.integration
@pytest.mark.parametrize(("names", "w_old", "w_new", "stop"), [(["a", "b"], 2, 3, 5), (["a"], 4, 2, 3)])
def test_resume_on_another_number_of_ranks_reads_exactly_the_rest_of_the_epoch(splits, tmp_path, names, w_old, w_new,
                                                                              stop):  # fmt: skip
    urls, keys = splits
    url = ",".join(urls[n] for n in names)
    first = run_ranks(url, w_old, tmp_path / "cache", save=str(tmp_path / "state-RANK.pkl"), stop=stop)
    from loaders import merge_states

    states = [pickle.loads((tmp_path / f"state-{r}.pkl").read_bytes()) for r in range(w_old)]
    merged = merge_states(states)
    assert merged["batch"] == stop and merged["world_size"] == w_old
    state = tmp_path / "state-0.pkl"  # any one rank's state is enough
    rest = run_ranks(url, w_new, tmp_path / "cache2", state_in=str(state))
    read_before = [[k for b in r["batches"] for k in b[0]] for r in first]
    read_after = [[k for b in r["batches"] for k in b[0]] for r in rest]
    assert read_before == [e[: stop * 4] for e in expected(names, keys, w_old, [])]
    total = epoch_size(names) or sum(SIZES[names[0]])
    consumed = consumed_after(total, [], w_old, stop * 4)
    assert read_after == expected(names, keys, w_new, consumed), "the new ranks read exactly the planned rest"
    assert len({len(r["batches"]) for r in rest}) == 1, "equal batches per new rank"
    everything = [k for r in read_before + read_after for k in r]
    assert len(everything) == len(set(everything)), "a sample was read twice in the epoch"
    assert total - len(everything) < w_new * 4 + w_new  # the remainder and each new rank's partial batch
    if len(names) > 1:  # every batch says which source each sample came from
        for r in first + rest:
            for batch_keys, sources in r["batches"]:
                assert [names[s] for s in sources] == [k[0] for k in batch_keys]
        share = sum(k.startswith("a") for k in everything) / len(everything)
        assert abs(share - 2 / 3) < 0.1


def test_a_state_from_another_mixture_or_seed_is_refused(splits):
    from loaders import Source, imagenet_dali, mix

    urls, _ = splits
    a = imagenet_dali(mix(Source(urls["a"], weight=2), Source(urls["b"], weight=1)), batch_size=4, device="cpu",
                      image_size=32, seed=11, epoch_size=60)  # fmt: skip
    state = a.state_dict()
    b = imagenet_dali(mix(Source(urls["a"], weight=3), Source(urls["b"], weight=2)), batch_size=4, device="cpu",
                      image_size=32, seed=11, epoch_size=60)  # fmt: skip
    with pytest.raises(ValueError, match=r"source 0 \(s3://test/elastic/a\) has weight=2 in the state, 3 here"):
        b.load_state_dict(state)
    c = imagenet_dali(urls["a"], batch_size=4, device="cpu", image_size=32, seed=12)
    with pytest.raises(ValueError, match="seed=11, this loader has seed=12"):
        c.load_state_dict(state)
    with pytest.raises(ValueError, match="source\\(s\\), this loader has 1"):
        imagenet_dali(urls["a"], batch_size=4, device="cpu", image_size=32, seed=11).load_state_dict(state)


def test_sources_whose_fields_disagree_are_refused_naming_the_source(splits):
    from loaders import imagenet_dali, mix
    from shards.manifest import read_manifest

    urls, _ = splits
    m = read_manifest(urls["b"])
    m["fields"] = {**m["fields"], "cls": "label id into another label space, as text"}
    write_manifest("s3://test/elastic/c", m | {"shards": []} | {"num_samples": 0, "source": {**m["source"],
                   "inputs_seen": m["quarantine"]["count"]}})  # fmt: skip
    with pytest.raises(ValueError, match=r"s3://test/elastic/c: field 'cls' is .* here but 'label' in s3://test/"):
        imagenet_dali(mix(urls["a"], "s3://test/elastic/c"), batch_size=4, device="cpu", image_size=32)


def test_a_state_from_the_plan_before_subsets_were_drawn_shard_by_shard_is_refused_if_it_has_a_subset(splits):
    """Plan version 2 draws a subset shard by shard (O(shards), no per-sample array), so a version-1 state (no
    `plan` key) over a subset cannot resume exactly and is refused in one sentence; one without a subset has the
    same order in both versions and resumes; a state from a newer plan is refused."""
    from loaders import Source, imagenet_dali, mix

    urls, _ = splits
    kw = {"batch_size": 4, "device": "cpu", "image_size": 32, "seed": 11, "return_keys": True, "num_threads": 1}
    sub = imagenet_dali(mix(Source(urls["a"], subset=0.5), Source(urls["b"])), **kw)
    old = {k: v for k, v in sub.state_dict().items() if k != "plan"}
    with pytest.raises(ValueError, match=r"^state was saved by plan version 1, which orders s3://test/elastic/a "
                                         r"differently from this loader's plan version 2, so the epoch cannot "
                                         r"resume exactly - start the next epoch without it$"):  # fmt: skip
        imagenet_dali(mix(Source(urls["a"], subset=0.5), Source(urls["b"])), **kw).load_state_dict(old)
    with pytest.raises(ValueError, match="saved by plan version 3"):
        imagenet_dali(urls["a"], **kw).load_state_dict({**imagenet_dali(urls["a"], **kw).state_dict(), "plan": 3})

    whole = imagenet_dali(urls["a"], **kw)
    batches = iter(whole)
    next(batches)
    state = whole.state_dict()
    following = list(next(batches)["key"])
    for saved in (state, {k: v for k, v in state.items() if k != "plan"}):
        resumed = imagenet_dali(urls["a"], **kw)
        resumed.load_state_dict(saved)
        assert list(next(iter(resumed))["key"]) == following
