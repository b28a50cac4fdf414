"""Streaming ingest: increments become generations exactly once, equal to the batch job; v2 manifests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("apache_beam", reason="Beam is not installed (pip install '.[beam]')")

from infra.photos import photo_jpeg
from pipelines.imagenet import WNIDS
from shards.errors import ManifestError
from shards.generations import read_generation
from shards.manifest import read_manifest, validate_manifest
from shards.verify import verify_split
from tests.raw import imagenet as imagenet_raw
from tests.splits import read_samples
from tests.watching import POOL, add, watcher


@pytest.fixture(scope="module")
def waves(tmp_path_factory):
    """The fixture ImageNet's train files arriving in waves, one generation each, plus a file still being written
    while it is first listed. Returns (raw, out, reports)."""
    train, _ = imagenet_raw.logical_dataset()
    root = tmp_path_factory.mktemp("waves")
    raw, out = root / "raw", root / "out"
    (raw / "train").mkdir(parents=True)
    (raw / "val").mkdir()
    w = watcher(raw, out)
    reports = [w.tick(POOL.submit)]  # nothing yet
    wnids = list(train)
    for part in (wnids[:3], wnids[3:]):
        for wnid in part:
            add(raw, wnid, train[wnid])
        reports.append(w.tick(POOL.submit))
    slow = raw / "train" / wnids[0] / f"{wnids[0]}_77.JPEG"
    data = photo_jpeg(77, size=(96, 72))
    slow.write_bytes(data[:1000])

    def finish() -> None:  # still being written when the watcher lists it
        time.sleep(0.15)
        with open(slow, "ab") as f:
            f.write(data[1000:])

    add(raw, wnids[1], {f"{wnids[1]}_78.JPEG": photo_jpeg(78, size=(96, 72))})
    t = threading.Thread(target=finish)
    t.start()
    reports.append(w.tick(POOL.submit))
    t.join()
    reports.append(w.tick(POOL.submit))
    return raw, out, reports


def test_waves_become_generations_equal_to_the_batch_job(waves, tmp_path):
    raw, out, reports = waves
    assert [r.generation for r in reports] == [None, 1, 2, 3, 4]
    assert reports[3].unstable == 1 and reports[3].files == 1  # the file being written waits for the next tick
    assert reports[4].files == 1 and reports[4].unstable == 0
    m = read_manifest(str(out / "train"))
    assert m["version"] == 2 and [g["generation"] for g in m["generations"]] == [1, 2, 3, 4]
    assert sum(g["inputs_seen"] for g in m["generations"]) == m["source"]["inputs_seen"] == 57
    # the batch job over the same final folder: the same samples, byte for byte, and the same quarantine keys
    batch = tmp_path / "batch"
    cmd = [sys.executable, "-m", "pipelines", "imagenet", "--input", str(raw), "--output", str(batch), "--splits",
           "train", "--min-shards", "2", "--max-bad-fraction", "0.2", "--no-progress"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    assert read_samples(out / "train") == read_samples(batch / "train")
    bm = read_manifest(str(batch / "train"))
    assert m["num_samples"] == bm["num_samples"] and m["quarantine"]["count"] == bm["quarantine"]["count"]
    quarantined = [json.loads(x)["key"] for x in (out / "train" / m["quarantine"]["path"]).read_text().splitlines()]
    batch_q = [json.loads(x)["key"] for x in (batch / "train" / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(quarantined) == sorted(batch_q)
    assert verify_split(str(out / "train")).ok


def test_a_pinned_generation_reads_as_published_and_v2_counts_must_reconcile(waves):
    _, out, _ = waves
    g1 = read_generation(str(out / "train"), 1)
    assert g1["generation"] == 1 and len(read_samples(out / "train", g1)) == g1["num_samples"] == 27
    with pytest.raises(ManifestError, match="generation 9 is not published; the newest is"):
        read_generation(str(out / "train"), 9)
    bad = json.loads(json.dumps(g1))
    bad["generations"][0]["quarantine_count"] += 1
    with pytest.raises(ManifestError, match="generation 1: counts do not add up"):
        validate_manifest(bad)
    r = subprocess.run([sys.executable, "-m", "shards", "ls", str(out / "train")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count(" increment ") == 4 and "generation 4 (pin one" in r.stdout


def test_a_file_changed_after_conversion_is_quarantined_not_duplicated(waves, tmp_path):
    raw, out, _ = waves
    work = tmp_path / "copy"
    shutil.copytree(out, work / "out")
    wnid = imagenet_raw.CLASSES[2]
    target = raw / "train" / wnid / f"{wnid}_1003.JPEG"
    original = target.read_bytes()
    try:
        target.write_bytes(photo_jpeg(999, size=(96, 72)))
        w = watcher(raw, work / "out")
        r = w.tick(POOL.submit)
        assert r.generation == 5 and r.changed == 1 and r.samples == 0
        m = read_manifest(str(work / "out" / "train"))
        entry = json.loads((work / "out" / "train" / m["generations"][-1]["quarantine"]).read_text())
        assert entry["stage"] == "changed" and str(target) in entry["source"] and "generation 1" in entry["reason"]
        assert w.tick(POOL.submit).generation is None  # reported once
    finally:
        target.write_bytes(original)


def test_an_increment_with_too_much_bad_input_is_not_published(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    add(raw, WNIDS[0], {f"{WNIDS[0]}_{i}.JPEG": photo_jpeg(i, size=(64, 48)) for i in range(4)})
    w = watcher(raw, out, max_bad=0.1)
    assert w.tick(POOL.submit).generation == 1
    add(raw, WNIDS[1], {f"{WNIDS[1]}_1.JPEG": b"not a jpeg", f"{WNIDS[1]}_2.JPEG": photo_jpeg(5, size=(64, 48))})
    r = w.tick(POOL.submit)
    assert r.generation is None and "1 of 2 inputs quarantined" in r.rejected and "rejected-inc-" in r.rejected
    assert read_manifest(str(out / "train"))["generation"] == 1 and not list((out / "train").glob("inc-*/*.tar"))[1:]
    assert w.tick(POOL.submit).generation is None  # not tried again until the files change
    add(raw, WNIDS[1], {f"{WNIDS[1]}_1.JPEG": photo_jpeg(6, size=(64, 48))})
    r = w.tick(POOL.submit)
    assert r.generation == 2 and r.samples == 2  # the fixed file, and its good neighbour with it


def test_store_errors_stop_the_watcher_after_bounded_retries(tmp_path, capsys):
    from pipelines.common.watch import WatchOptions, _Watch

    raw, out = tmp_path / "raw", tmp_path / "out"
    add(raw, WNIDS[0], {f"{WNIDS[0]}_1.JPEG": photo_jpeg(1, size=(64, 48))})
    (out / "train").mkdir(parents=True)
    (out / "train" / "_watch").write_text("a file where the watcher keeps its intents")  # every write fails
    w = watcher(raw, out)
    body = _Watch([w.plan], w.raw, w.encode, WatchOptions(settle=0, retries=2, retry_delay=0), 1)
    body.watchers, body.failures, body.pool = [w], 0, POOL
    assert body.tick() == []
    with pytest.raises(RuntimeError, match=r"the store failed 2 times in a row .*Nothing half-published"):
        body.tick()
    assert "store error (1 of 2)" in capsys.readouterr().err
    assert not (out / "train" / "manifest.json").exists()


def test_stop_on_bad_stops_and_verify_names_a_generation_without_its_ledger(waves, tmp_path):
    from pipelines.common.watch import WatchOptions, _Watch

    raw, out = tmp_path / "raw", tmp_path / "out"
    add(raw, WNIDS[0], {f"{WNIDS[0]}_1.JPEG": b"not a jpeg"})
    w = watcher(raw, out, max_bad=0.0)
    body = _Watch([w.plan], w.raw, w.encode, WatchOptions(settle=0, stop_on_bad=True), 1)
    body.watchers, body.failures, body.pool = [w], 0, POOL
    with pytest.raises(RuntimeError, match=r"1 of 1 inputs quarantined.*\(--stop-on-bad\)"):
        body.tick()
    copy = tmp_path / "copy"
    shutil.copytree(waves[1] / "train", copy)
    m = read_manifest(str(copy))
    (copy / m["generations"][1]["inputs"]).unlink()
    problems = verify_split(str(copy)).problems
    assert len(problems) == 1 and "generation 2: its ledger" in problems[0] and "is missing" in problems[0]


def test_kaggle_val_files_arrive_with_their_labels_in_the_csv(tmp_path):
    import dataclasses
    import functools

    from pipelines.common.increments import SplitWatcher
    from pipelines.imagenet import ImageNetConfig, WatchedFolders, encode_sample

    raw, out = tmp_path / "raw", tmp_path / "out"
    val = raw / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    val.mkdir(parents=True)
    rows = ["ImageId,PredictionString"]

    def land(first: int, n: int, labelled: int) -> None:
        for i in range(first, first + n):
            name = f"ILSVRC2012_val_{i:08d}"
            if i < first + labelled:  # the row goes in first, then the image
                rows.append(f"{name},{WNIDS[i]} 1 2 3 4")
                (raw / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
            (val / f"{name}.JPEG").write_bytes(photo_jpeg(i, size=(64, 48)))

    plan = dataclasses.replace(
        watcher(raw, out, max_bad=0.5).plan, split="validation", split_url=str(out / "validation")
    )
    w = SplitWatcher(plan, WatchedFolders(str(raw), "kaggle"), functools.partial(encode_sample, cfg=ImageNetConfig()),
                     settle=0)  # fmt: skip
    land(1, 4, 4)
    assert w.tick(POOL.submit).samples == 4
    land(5, 3, 2)  # one image whose row has not come: quarantined for it, as the batch job would
    r = w.tick(POOL.submit)
    assert (r.generation, r.samples, r.quarantined) == (2, 2, 1)
    got = {k: int(s["cls"]) for k, s in read_samples(out / "validation").items()}
    assert got == {f"ILSVRC2012_val_{i:08d}": i for i in (1, 2, 3, 4, 5, 6)}
    q = (out / "validation" / read_manifest(str(out / "validation"))["quarantine"]["path"]).read_text()
    assert "ILSVRC2012_val_00000007" in q and "no label" in q


@pytest.mark.parametrize("same_stat", [True, False])
def test_a_file_briefly_missing_is_converted_once_it_reads_again(tmp_path, same_stat):
    """Removed after the listing, back with the same bytes (renamed back: same size and mtime; or copied: a new
    mtime): quarantined as unreadable in its generation, then converted - not reported as changed, not lost."""
    import dataclasses
    import os

    raw, out = tmp_path / "raw", tmp_path / "out"
    add(raw, WNIDS[0], {f"{WNIDS[0]}_{i}.JPEG": photo_jpeg(i, size=(64, 48)) for i in range(3)})
    target = raw / "train" / WNIDS[0] / f"{WNIDS[0]}_1.JPEG"
    aside = tmp_path / "aside.JPEG"
    w = watcher(raw, out, max_bad=0.5)
    listed = w.raw

    @dataclasses.dataclass
    class VanishingAfterListing:
        def inputs(self, split):
            return listed.inputs(split)

        def pointers(self, split, files):
            ps = listed.pointers(split, files)
            os.rename(target, aside)
            return ps

    w.raw = VanishingAfterListing()
    r = w.tick(POOL.submit)
    assert (r.generation, r.samples, r.quarantined) == (1, 2, 1)
    assert r.line("imagenet").endswith(
        "2 samples in 1 shard, 1 quarantined; the backlog found at the start, in one increment"
    )
    w.raw = listed
    assert w.tick(POOL.submit).generation is None  # still missing: nothing new, no empty generation per tick
    if same_stat:
        os.rename(aside, target)
    else:
        shutil.copyfile(aside, target)
    r = w.tick(POOL.submit)
    assert (r.generation, r.samples, r.changed, r.quarantined) == (2, 1, 0, 0)
    assert watcher(raw, out).tick(POOL.submit).generation is None  # a restarted watcher: converted once
    m = read_manifest(str(out / "train"))
    assert m["num_samples"] == 3 and m["quarantine"]["count"] == 1 and verify_split(str(out / "train")).ok
    assert set(read_samples(out / "train")) == {f"{WNIDS[0]}_{i}" for i in range(3)}
