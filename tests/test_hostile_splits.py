"""Splits whose manifests or snapshots were written by someone else: every path they hold stays inside the split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def test_compact_of_a_sound_split_still_works_and_ls_shows_the_retired_folders_in_their_grace(tmp_path, capsys):
    from shards.cli import main

    split = grown_split(tmp_path)
    report = compact(str(split), shard_size=1 << 30)
    assert report.replaced == [1, 2] and report.samples == 8
    assert read_manifest(str(split))["num_samples"] == 12 and verify_split(str(split)).ok
    assert main(["ls", str(split)]) == 0
    out = capsys.readouterr().out
    for r in read_manifest(str(split))["retired"]:
        assert f"generation     {r['generation']}  retired: compacted into 4" in out and r["folder"] in out


def test_a_second_compaction_refuses_at_once_naming_the_first_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import threading

    import shards.compact as compaction
    from shards.cli import main

    split = grown_split(tmp_path, generations=4)
    inside, release = threading.Event(), threading.Event()
    rewrite_shards = compaction._rewrite

    def slow_rewrite(*a, **kw):
        inside.set()
        release.wait(30)
        return rewrite_shards(*a, **kw)

    monkeypatch.setattr(compaction, "_rewrite", slow_rewrite)
    first = threading.Thread(target=compaction.compact, args=(str(split),), kwargs={"shard_size": 1 << 30})
    first.start()
    try:
        assert inside.wait(30)
        assert verify_split(str(split)).ok  # the first one's folder is work in progress, not a problem
        assert main(["compact", str(split)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "held by shards compact" in err and f"pid {os.getpid()}" in err
    finally:
        release.set()
        first.join()
    assert len(list(split.glob("cmp-*"))) == 1 and verify_split(str(split)).ok


def test_the_folder_of_a_killed_compaction_is_reported_then_removed_by_the_next(tmp_path):
    import socket

    split = grown_split(tmp_path, generations=3)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (split / "_compact_lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                                                     "owner": "shards compact", "since": time.time()}))  # fmt: skip
    (split / "cmp-20261202T000000-deadbeef").mkdir()
    (split / "cmp-20261202T000000-deadbeef" / "shard-000000.tar").write_bytes(b"half")
    problems = verify_split(str(split)).problems
    assert (
        len(problems) == 1 and "cmp-20261202T000000-deadbeef" in problems[0] and "next `shards compact`" in problems[0]
    )
    report = compact(str(split), shard_size=1 << 30, grace=0)
    assert report.replaced == [1, 2] and not (split / "cmp-20261202T000000-deadbeef").exists()
    assert not (split / "_compact_lock").exists() and verify_split(str(split)).ok
