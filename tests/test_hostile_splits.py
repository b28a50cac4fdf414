"""Splits whose manifests or snapshots were written by someone else: every path they hold stays inside the split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shards import storage
from shards.compact import compact
from shards.errors import ManifestError
from shards.generations import new_folder, publish_generation, split_lock
from shards.manifest import read_manifest
from shards.publish import write_tar_shard
from shards.verify import verify_split


def grown_split(root: Path, generations: int = 3, per: int = 4) -> Path:
    """A split of `generations` small increments published as a watcher publishes them."""
    split = root / "train"
    template = {"dataset": "toy", "split": "train", "fields": {"txt": "text"}, "classes": None,
                "params": {"seed": 0}, "source": {"url": "raw", "layout": "toy"}}  # fmt: skip
    for g in range(generations):
        folder = new_folder("inc")
        samples = [(f"s{g}_{i}", {"txt": f"sample {g} {i}".encode()}) for i in range(per)]
        entry = write_tar_shard(storage.join(str(split), folder), 0, samples, fields=["txt"])
        ledger = "".join(json.dumps({"url": f"raw/{k}", "size": 1, "tag": "1", "crc32c": "0", "keys": [k]}) + "\n"
                         for k, _ in samples)  # fmt: skip
        (split / folder / "inputs.jsonl").write_text(ledger)
        with split_lock(str(split), "test"):
            publish_generation(str(split), folder=folder, kind="increment", shards=[entry], quarantine=[],
                               inputs_seen=per, template=template, extra={"input_files": per})  # fmt: skip
    return split


def rewrite(split: Path, change) -> None:
    m = json.loads((split / "manifest.json").read_text())
    change(m)
    (split / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda m: m["generations"][0].update(inputs="../../../outside.txt"), "inputs"),
        (lambda m: m["generations"][0].update(inputs="/etc/passwd"), "inputs"),
        (lambda m: m["generations"][0].update(quarantine="a/../../x.jsonl"), "quarantine"),
        (lambda m: m["generations"][0].update(folder="../../../victim"), "folder"),
        (lambda m: m["generations"][0].update(folder="."), "folder"),
        (lambda m: m.update(retired=[{"generation": 0, "folder": "../../../victim", "by": 1, "at": 0}]), "retired"),
        (lambda m: m.update(retired=[{"generation": 0, "folder": "inc-x/../..", "by": 1, "at": 0}]), "retired"),
        (lambda m: m["shards"][0].update(path="inc-a/shard\x00.tar"), "control character"),
        (lambda m: m["shards"][0].update(idx="inc-a\\..\\..\\x.idx"), "backslash"),
        (lambda m: m.update(side_tables={"annotations": ["../x.parquet"]}), "side_tables"),
    ],
)
def test_compact_and_verify_refuse_a_manifest_path_that_leaves_the_split(tmp_path, change, named):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep me")
    (tmp_path / "outside.txt").write_text("secret")
    split = grown_split(tmp_path / "a" / "b")
    rewrite(split, change)
    with pytest.raises(ManifestError, match=named):
        compact(str(split), shard_size=1 << 30, grace=0)
    report = verify_split(str(split))
    assert not report.ok and named in report.problems[0]
    assert (victim / "precious").read_text() == "keep me"
    assert not any("secret" in p.read_text(errors="replace") for p in split.rglob("*.jsonl"))


def test_a_snapshot_with_a_hostile_retired_folder_is_refused_when_read(tmp_path):
    from shards.generations import read_generation

    split = grown_split(tmp_path)
    snap = split / "generations" / "000001.json"
    m = json.loads(snap.read_text())
    m["generations"][0]["folder"] = "../../victim"
    snap.write_text(json.dumps(m))
    with pytest.raises(ManifestError, match="folder"):
        read_generation(str(split), 1)
    assert any("folder" in p for p in verify_split(str(split)).problems)


def test_compact_of_a_sound_split_still_works(tmp_path):
    split = grown_split(tmp_path)
    report = compact(str(split), shard_size=1 << 30, grace=0)
    assert report.replaced == [1, 2] and report.samples == 8
    assert read_manifest(str(split))["num_samples"] == 12 and verify_split(str(split)).ok
