"""The ImageNet Beam job on the local runner: every layout, labels, fixes, quarantine, determinism, resume."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from shards.manifest import read_manifest
from shards.quarantine import read_quarantine
from shards.verify import verify_split
from shards.wds import iter_samples
from tests.raw import imagenet as imagenet_raw

DATA = Path(__file__).parent / "data" / "imagenet"
TFDS_WNIDS = (DATA / "imagenet2012_labels.txt").read_text().split()


def run_job(inp: Path | str, out: Path | str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines", "imagenet", "--input", str(inp), "--output", str(out)]
    cmd += ["--min-shards", "2", "--max-bad-fraction", "0.2", "--no-progress", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def read_split(url: Path) -> dict[str, dict[str, bytes]]:
    out = {}
    for entry in read_manifest(str(url))["shards"]:
        with open(url / entry["path"], "rb") as f:
            for key, sample in iter_samples(f, url=entry["path"], fields={"jpg", "cls", "json"}):
                out[key] = sample
    return out


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("raw")
    return {
        "archives": imagenet_raw.write_archives(root / "archives"),
        "kaggle": imagenet_raw.write_kaggle(root / "kaggle"),
        "folders": imagenet_raw.write_folders(root / "folders"),
    }


@pytest.fixture(scope="module")
def converted(layouts, tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name, raw in layouts.items():
        out[name] = tmp_path_factory.mktemp(f"out-{name}")
        run_job(raw, out[name])
    return out


@pytest.mark.parametrize("layout", ["archives", "kaggle", "folders"])
def test_layout_converts_with_fixes_and_quarantine(converted, layout):
    out = converted[layout]
    for split in ("train", "validation"):
        report = verify_split(str(out / split))
        assert report.ok, report.problems
    train, val = read_manifest(str(out / "train")), read_manifest(str(out / "validation"))
    assert (train["num_samples"], train["quarantine"]["count"], train["source"]["inputs_seen"]) == (52, 3, 55)
    assert (val["num_samples"], val["quarantine"]["count"], val["source"]["inputs_seen"]) == (12, 1, 13)
    assert train["classes"] == TFDS_WNIDS and train["source"]["layout"] == layout
    reasons = {q["key"].rsplit("_", 1)[1]: q for q in read_quarantine(str(out / "train" / "quarantine.jsonl"))}
    assert "truncated" in reasons["9003"]["reason"] and reasons["9003"]["stage"] == "decode"
    assert "zero-byte" in reasons["9004"]["reason"]
    assert "undecodable" in reasons["9006"]["reason"]
    (vq,) = read_quarantine(str(out / "validation" / "quarantine.jsonl"))
    assert vq["key"] == "ILSVRC2012_val_00000013" and vq["stage"] == "label" and "no label" in vq["reason"]
    samples = read_split(out / "train")
    fixes = {k.rsplit("_", 1)[1]: json.loads(s["json"])["fixes"] for k, s in samples.items()}
    assert fixes["9000"] == ["cmyk->rgb"] and fixes["9001"] == ["png->jpeg"]
    assert fixes["9002"] == ["grayscale->rgb"] and fixes["9005"] == ["progressive->baseline"]
    for key, s in samples.items():
        wnid = key.split("_")[0]
        assert int(s["cls"]) == TFDS_WNIDS.index(wnid)  # label id = index in TFDS's sorted wnid list
        with Image.open(io.BytesIO(s["jpg"])) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and not im.info.get("progressive")
    train_raw, val_raw = imagenet_raw.logical_dataset()
    untouched = {n.split(".")[0]: d for files in train_raw.values() for n, d in files.items()}
    assert samples[f"{imagenet_raw.CLASSES[0]}_1000"]["jpg"] == untouched[f"{imagenet_raw.CLASSES[0]}_1000"]
    vals = read_split(out / "validation")
    for name, wnid, _ in val_raw[:12]:
        assert int(vals[name.split(".")[0]]["cls"]) == TFDS_WNIDS.index(wnid)


def test_layouts_give_identical_shards(converted):
    ref = converted["archives"]
    for layout in ("kaggle", "folders"):
        for split in ("train", "validation"):
            for entry in read_manifest(str(ref / split))["shards"]:
                for name in (entry["path"], entry["idx"]):
                    assert (ref / split / name).read_bytes() == (converted[layout] / split / name).read_bytes()


def test_shards_mix_classes(converted):
    m = read_manifest(str(converted["folders"] / "train"))
    assert len(m["shards"]) >= 2
    for entry in m["shards"]:
        with open(converted["folders"] / "train" / entry["path"], "rb") as f:
            labels = [int(s["cls"]) for _, s in iter_samples(f)]
        assert len(set(labels)) >= 4, "a shard should hold many classes, not a run of one"


def test_tfds_fake_archives_agree_with_tfds_labels(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        (raw / name).write_bytes((DATA / name).read_bytes())
    run_job(raw, tmp_path / "out", "--val-labels", str(DATA / "imagenet2012_validation_labels.txt"))
    train, val = read_split(tmp_path / "out" / "train"), read_split(tmp_path / "out" / "validation")
    assert len(train) == 100 and len(val) == 10
    for key, s in train.items():
        assert int(s["cls"]) == TFDS_WNIDS.index(key.split("_")[0])
    # independently checked values (corpus SOURCES.md): val 1 -> 65, val 2 -> 970, val 3 -> 230
    assert [int(val[f"ILSVRC2012_val_000000{i}"]["cls"]) for i in (1, 2, 3)] == [65, 970, 230]


def test_same_input_gives_identical_bytes(layouts, converted, tmp_path):
    run_job(layouts["archives"], tmp_path / "again")
    for split in ("train", "validation"):
        names = sorted(p.name for p in (converted["archives"] / split).iterdir() if p.is_file())
        assert names == sorted(p.name for p in (tmp_path / "again" / split).iterdir() if p.is_file())
        for n in names:
            assert (converted["archives"] / split / n).read_bytes() == (tmp_path / "again" / split / n).read_bytes(), n


def test_killed_job_resumes_without_rewriting_committed_shards(layouts, tmp_path):
    out = tmp_path / "out"
    run_job(layouts["folders"], out, "--splits", "train", "--min-shards", "3")
    train = out / "train"
    reference = {p.name: p.read_bytes() for p in train.iterdir() if p.is_file()}
    shards = read_manifest(str(train))["shards"]
    assert len(shards) >= 3
    # the state a kill leaves: no manifest, some shards committed (tar + idx + progress record), the rest absent
    (train / "manifest.json").unlink()
    (train / "quarantine.jsonl").unlink()
    lost = shards[-1]
    for name in (lost["path"], lost["idx"], f"_progress/{lost['path'][:-4]}.json"):
        (train / name).unlink()
    kept = {s["path"]: os.stat(train / s["path"]) for s in shards[:-1]}
    run_job(layouts["folders"], out, "--splits", "train", "--min-shards", "3")
    for name, before in kept.items():
        after = os.stat(train / name)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), f"{name} was rewritten"
    assert {p.name: p.read_bytes() for p in train.iterdir() if p.is_file()} == reference
    # a committed shard that was damaged afterwards is not trusted: it is rewritten
    damaged = train / shards[0]["path"]
    damaged.write_bytes(b"\0" * damaged.stat().st_size)
    run_job(layouts["folders"], out, "--splits", "train", "--min-shards", "3")
    assert damaged.read_bytes() == reference[shards[0]["path"]]


def test_too_much_bad_input_fails_the_job_with_reasons(layouts, tmp_path):
    r = run_job(layouts["folders"], tmp_path / "out", "--splits", "train", "--max-bad-fraction", "0.01", check=False)
    assert r.returncode == 1
    assert "3 of 55 inputs quarantined" in r.stderr and "--max-bad-fraction" in r.stderr
    assert not (tmp_path / "out" / "train" / "manifest.json").exists()
    assert len(read_quarantine(str(tmp_path / "out" / "train" / "quarantine.jsonl"))) == 3


def test_incomplete_or_unknown_layouts_say_what_is_missing(layouts, tmp_path):
    raw = tmp_path / "val-only"
    raw.mkdir()
    (raw / "ILSVRC2012_img_val.tar").write_bytes((layouts["archives"] / "ILSVRC2012_img_val.tar").read_bytes())
    r = run_job(raw, tmp_path / "o1", "--splits", "train", check=False)
    assert r.returncode == 2 and "has no ['train']" in r.stderr
    r = run_job(raw, tmp_path / "o2", "--splits", "validation", check=False)
    assert r.returncode == 2 and "no labels" in r.stderr and "ILSVRC2012_devkit_t12.tar.gz" in r.stderr
    (tmp_path / "nothing").mkdir()
    r = run_job(tmp_path / "nothing", tmp_path / "o3", check=False)
    assert r.returncode == 2 and "not an ImageNet layout" in r.stderr


def test_pipelines_help_lists_imagenet():
    r = subprocess.run([sys.executable, "-m", "pipelines", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "imagenet" in r.stdout


@pytest.mark.slow
def test_sigkill_mid_job_then_rerun_keeps_committed_shards(tmp_path):
    import re
    import signal
    import time

    from infra.photos import photo_jpeg

    raw = tmp_path / "raw"
    for i in range(1200):
        wnid = imagenet_raw.CLASSES[i % 4]
        (raw / "train" / wnid).mkdir(parents=True, exist_ok=True)
        (raw / "train" / wnid / f"{wnid}_{i}.JPEG").write_bytes(photo_jpeg(i, size=(320, 240)))
    # re-encoding (resize) and one writer process make the write phase last long enough to be interrupted
    args = ["--splits", "train", "--min-shards", "12", "--resize-max-side", "64", "--writer-processes", "1"]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines", "imagenet", "--input", str(raw), "--output", str(out), "--no-progress"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # what the killed job cannot clean up stays in the test's dir
    proc = subprocess.Popen([*cmd, *args], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)  # fmt: skip
    progress = out / "train" / "_progress"
    deadline = time.monotonic() + 240
    while not (progress.is_dir() and len(list(progress.glob("*.json"))) >= 2):
        assert proc.poll() is None, "the job ended before it could be killed"
        assert time.monotonic() < deadline, "no shard was committed in time"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "train" / "manifest.json").exists()
    committed = [json.loads(p.read_text())["entry"]["path"] for p in progress.glob("*.json")]
    before = {name: os.stat(out / "train" / name) for name in committed}
    r = run_job(raw, out, *args)
    kept = int(re.search(r"(\d+) kept from an earlier run", r.stdout).group(1))
    assert kept >= len(committed) >= 2
    for name, st in before.items():
        after = os.stat(out / "train" / name)
        assert (after.st_ino, after.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), f"{name} was rewritten"
    assert verify_split(str(out / "train")).ok
    clean = tmp_path / "clean"
    run_job(raw, clean, *args)
    m = read_manifest(str(out / "train"))
    assert m == read_manifest(str(clean / "train"))
    for s in m["shards"]:
        assert (out / "train" / s["path"]).read_bytes() == (clean / "train" / s["path"]).read_bytes()
