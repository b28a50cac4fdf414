"""The Open Images job and `openimages_dali` on the CPU: boxes and labels equal the CSVs (reference reader and DALI
loader), rotation keeps pixels and boxes together, the corpus quirks, the Parquet side table."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.common.progress import reason_counts
from pipelines.openimages import parse_csv, read_class_descriptions, rotate_boxes
from shards.manifest import read_manifest
from shards.quarantine import read_quarantine
from shards.verify import verify_split
from shards.wds import iter_samples
from tests.raw import openimages as raw

pytest.importorskip("nvidia.dali", reason="DALI is not installed (pip install '.[dali]')")


def run_job(inp: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines", "openimages", "--input", str(inp), "--output", str(out)]
    r = subprocess.run(
        [*cmd, "--min-shards", "2", "--no-progress", *extra], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def read_split(url: Path) -> dict[str, dict[str, bytes]]:
    out = {}
    for entry in read_manifest(str(url))["shards"]:
        with open(url / entry["path"], "rb") as f:
            out.update(iter_samples(f, url=entry["path"]))
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for name, write in raw.LAYOUTS.items():
        root = tmp_path_factory.mktemp(name)
        extra = raw.LAYOUT_ARGS.get(name, [])
        run_job(write(root / "raw"), root / "out", "--keep-unannotated", "--max-bad-fraction", "0.5", *extra)
        out[name] = root / "out"
    return out


def test_rotation_turns_boxes_like_pixels():
    box = np.array([[0.1, 0.2, 0.4, 0.6]], np.float32)  # xmin, ymin, xmax, ymax
    assert np.allclose(rotate_boxes(box, 90), [[0.2, 0.6, 0.6, 0.9]])
    assert np.allclose(rotate_boxes(box, 180), [[0.6, 0.4, 0.9, 0.8]])
    assert np.allclose(rotate_boxes(box, 270), [[0.4, 0.1, 0.8, 0.4]])
    assert np.allclose(rotate_boxes(rotate_boxes(box, 90), 270), box)


def test_csv_quirks_are_read_or_rejected_with_file_and_line():
    header = "ImageID,Source,LabelName,Condidence\nx,verification,/m/0,1\n"
    assert list(parse_csv("labels", io.StringIO(header), "f.csv", None)) == [
        ("x", "label", {"mid": "/m/0", "source": "verification", "confidence": 1.0})
    ]
    boxes = raw.BOX_HEADER + "\nok,xclick,/m/0,1,0.1,0.2,0.3,0.4,0,0,0,0,0\n"
    boxes += "long,xclick,/m/0,1,0.1,0.2,0.3,0.4,,0,0,0,0,0\nflip,xclick,/m/0,1,0.5,0.2,0.3,0.4,0,0,0,0,0\n"
    boxes += "out,xclick,/m/0,1,0.1,1.2,0.3,0.4,0,0,0,0,0\nwho,xclick,/m/9,1,0.1,0.2,0.3,0.4,0,0,0,0,0\n"
    rows = list(parse_csv("boxes", io.StringIO(boxes), "b.csv", {"/m/0"}))
    assert [(r[0], r[1]) for r in rows] == [
        ("ok", "box"),
        ("long", "bad"),
        ("flip", "bad"),
        ("out", "bad"),
        ("who", "bad"),
    ]
    assert rows[1][2].startswith("b.csv:3: 14 fields, expected 13")
    assert "b.csv:4" in rows[2][2] and "min > max" in rows[2][2]
    assert "b.csv:5" in rows[3][2] and "outside [0, 1]" in rows[3][2]
    assert "b.csv:6" in rows[4][2] and "unknown class '/m/9'" in rows[4][2]
    meta = raw.META_HEADER + "\nd,validation,,,,Intel,Test Image D,,,,90\n"  # Datumaro's 11-field row
    (row,) = parse_csv("meta", io.StringIO(meta), "m.csv", None)
    assert row[2]["Subset"] == "validation" and row[2]["Rotation"] == "90" and "11 fields" in row[2]["malformed"]
    assert read_class_descriptions("/m/0,Cat\n") == [("/m/0", "Cat")]
    assert read_class_descriptions("LabelName,DisplayName\n/m/0,Cat\n") == [("/m/0", "Cat")]


def test_generated_boxes_labels_and_rotation_match_the_csvs(converted):
    content = raw.generated()
    mids = [m for m, _ in raw.CLASSES]
    for split, rows in content.items():
        url = converted["generated"] / split
        assert verify_split(str(url)).ok
        m = read_manifest(str(url))
        assert m["classes"] == mids and m["class_names"] == [n for _, n in raw.CLASSES]
        samples = read_split(url)
        assert sorted(samples) == sorted(r[0] for r in rows)
        for iid, rotation, (x0, x1, y0, y1), mid in rows:
            s = samples[iid]
            boxes = np.frombuffer(s["boxes"], "<f4").reshape(-1, 4)
            assert np.allclose(boxes, [[x0, y0, x1, y1]], atol=1e-5), iid  # upright again, with its box
            assert np.frombuffer(s["labels"], "<i4").tolist() == [mids.index(mid)]
            assert np.frombuffer(s["imagelabels"], "<i4").tolist() == [mids.index(mid)]  # only the positive one
            info = json.loads(s["json"])
            assert (
                info["rotation"] == rotation and info["boxes"][0]["xmin"] == raw.file_box((x0, x1, y0, y1), rotation)[0]
            )
            assert (f"rotated-{rotation}ccw" in info["fixes"]) == bool(rotation)
            # pixels and boxes agree: the red patch is where the box says, rotated or not
            im = np.asarray(Image.open(io.BytesIO(s["jpg"])).convert("RGB"), np.int16)
            h, w, _ = im.shape
            cx, cy = int((x0 + x1) / 2 * w), int((y0 + y1) / 2 * h)
            assert np.abs(im[cy, cx] - raw.RED).max() < 40, (iid, rotation, im[cy, cx])


def test_corpus_layouts_match_their_csvs(converted):
    v4 = Path(__file__).parent / "data" / "openimages" / "v4"
    with open(v4 / "train-annotations-bbox.csv") as f:
        csv_boxes: dict[str, list] = {}
        for row in csv.DictReader(f):
            csv_boxes.setdefault(row["ImageID"], []).append(row)
    samples = read_split(converted["v4"] / "train")
    classes = read_manifest(str(converted["v4"] / "train"))["classes"]
    assert len(samples) == 512
    checked = 0
    for key, s in samples.items():
        info = json.loads(s["json"])
        want = sorted((r["LabelName"], float(r["XMin"]), float(r["YMax"])) for r in csv_boxes.get(key, []))
        assert sorted((b["mid"], b["xmin"], b["ymax"]) for b in info["boxes"]) == want, key
        kept = [r for r in csv_boxes.get(key, []) if r["LabelName"] in classes]
        got = np.frombuffer(s["boxes"], "<f4").reshape(-1, 4)
        assert len(got) == len(kept)
        labels = np.frombuffer(s["labels"], "<i4")
        assert sorted(zip(labels.tolist(), [round(float(x), 4) for x in got[:, 0]], strict=True)) == sorted(
            (classes.index(r["LabelName"]), round(float(np.float32(r["XMin"])), 4)) for r in kept
        )
        checked += bool(kept)
    assert checked > 100
    # TFDS's misspelled `Condidence` header is read: every human label of the written images arrives, with its
    # confidence; the positive ones of the chosen classes are the numeric `imagelabels`
    with open(v4 / "train-human-labels.csv") as f:
        human = [r for r in csv.reader(f)][1:]
    got = sorted(
        (k, lb["mid"], lb["confidence"]) for k, s in samples.items() for lb in json.loads(s["json"])["imagelabels"]
    )
    assert got == sorted((r[0], r[2], float(r[3])) for r in human if r[0] in samples)
    positives = sum(1 for r in human if r[0] in samples and float(r[3]) >= 0.5 and r[2] in classes)
    assert sum(len(s["imagelabels"]) // 4 for s in samples.values()) == positives > 0
    # Challenge 2019: the 14-field row quarantines its image with the file and line
    (q,) = read_quarantine(str(converted["challenge2019"] / "train" / "quarantine.jsonl"))
    assert q["key"] == "02" and q["stage"] == "annotations"
    assert q["reason"].startswith("malformed annotation row challenge-2019-train-detection-bbox.csv:3: 14 fields")
    summary = reason_counts(str(converted["challenge2019"] / "train" / "quarantine.jsonl"))
    assert summary == f"1x annotations: 14 fields, expected 13 (e.g. {q['source']})"  # what the job prints per split
    val = read_split(converted["challenge2019"] / "validation")  # the 7-column validation layout
    assert json.loads(val["11"]["json"])["boxes"][0]["flags"] == {"IsGroupOf": 1}
    # Datumaro V6: image d's metadata row is short by one field; what is unambiguous is read, and it is marked
    d = json.loads(read_split(converted["v6"] / "validation")["d"]["json"])
    assert d["rotation"] == 0 and "11 fields, expected 12" in d["malformed"] and "png->jpeg" in d["fixes"]
    # mmdetection's real excerpt: one Airplane box, classes from a header-less boxable file, labels from a file
    # whose name names no split
    m = read_manifest(str(converted["mmdetection"] / "train"))
    assert (m["classes"], m["class_names"]) == (["/m/0cmf2"], ["Airplane"])
    assert m["class_parents"] == {"/m/0cmf2": "/m/0bl9f"}  # from bbox_labels_600_hierarchy.json
    s = read_split(converted["mmdetection"] / "train")["0001eeaf4aed83f9"]
    assert np.allclose(np.frombuffer(s["boxes"], "<f4"), [0.022673031, 0.07103825, 0.9642005, 0.80054647])
    assert np.frombuffer(s["imagelabels"], "<i4").tolist() == [0]
    assert sorted(read_split(converted["v5"] / "test")) == ["cc"]  # Datumaro V5: metadata only, kept


def test_side_table_holds_every_annotation(converted):
    url = converted["generated"] / "train"
    m = read_manifest(str(url))
    table = pq.read_table([str(url / p) for p in m["side_tables"]["annotations"]]).to_pylist()
    rows = raw.generated()["train"]
    assert sum(r["kind"] == "box" for r in table) == len(rows)
    assert sum(r["kind"] == "human" for r in table) == 2 * len(rows)  # a positive and a negative label per image
    iid, rotation, box, mid = rows[3]
    (got,) = [r for r in table if r["kind"] == "box" and r["ImageID"] == iid]
    assert got["LabelName"] == mid and round(got["XMin"], 4) == raw.file_box(box, rotation)[0]  # as in the CSV


def test_detection_loader_keeps_boxes_on_their_pixels(converted):
    from loaders import openimages_dali

    size = 96
    for layout in ("generated", "v4"):  # the eval graph hands over exactly the stored boxes and labels
        samples = read_split(converted[layout] / "train")
        evaluation = openimages_dali(
            str(converted[layout] / "train"),
            batch_size=8,
            train=False,
            image_size=size,
            device="cpu",
            return_keys=True,
            drop_last=False,
        )
        seen = 0
        for batch in evaluation:
            for j, key in enumerate(batch["key"]):
                n = int(batch["num_boxes"][j])
                stored = np.frombuffer(samples[key]["boxes"], "<f4").reshape(-1, 4)
                assert np.array_equal(batch["boxes"][j][:n].numpy(), stored)
                assert batch["labels"][j][:n].tolist() == np.frombuffer(samples[key]["labels"], "<i4").tolist()
                assert (batch["labels"][j][n:] == -1).all() and (batch["boxes"][j][n:] == 0).all()
                seen += 1
        assert seen == len(samples)
    url = str(converted["generated"] / "train")
    from loaders.imagenet import IMAGENET_MEAN, IMAGENET_STD

    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    train = openimages_dali(url, batch_size=4, train=True, image_size=size, device="cpu", seed=3)
    checked = 0
    for _ in range(3):  # epochs: different crops and flips
        for batch in train:
            img = batch["image"].numpy().transpose(0, 2, 3, 1) * std * 255 + mean * 255
            for j in range(len(img)):
                n = int(batch["num_boxes"][j])
                for x0, y0, x1, y1 in batch["boxes"][j][:n].numpy():
                    assert 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1
                    if (x1 - x0) * size < 6 or (y1 - y0) * size < 6:
                        continue  # cropped to a sliver: its centre pixel is mostly resampling blur
                    px = img[j, int((y0 + y1) / 2 * size), int((x0 + x1) / 2 * size)]
                    assert np.abs(px - raw.RED).max() < 60, px
                    checked += 1
    assert checked > 30


def test_classification_targets_are_the_positive_labels(converted):
    from loaders import openimages_dali

    url = converted["generated"] / "train"
    samples = read_split(url)
    loader = openimages_dali(
        str(url), batch_size=4, task="classification", train=False, image_size=32, device="cpu", return_keys=True
    )
    for batch in loader:
        for j, key in enumerate(batch["key"]):
            want = np.zeros(len(raw.CLASSES), np.float32)
            want[np.frombuffer(samples[key]["imagelabels"], "<i4")] = 1
            assert np.array_equal(batch["target"][j].numpy(), want)


def test_quarantine_names_the_archive_member_and_the_csv_lines(tmp_path):
    """An image read from a .tar.gz is named as the user has it (archive:member), not by its staged copy under
    the output; an annotated image with no file is named by the CSV file and line of its rows."""
    import tarfile

    root = raw.write_generated(tmp_path / "raw", {"train": 6})
    tgz = root / "train_0.tar.gz"
    with tarfile.open(tgz) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    with tarfile.open(tgz, "w:gz") as t:
        for m, data in [*members, (tarfile.TarInfo("train_0/brokenimage1.jpg"), b"not a jpeg")]:
            m.size = len(data)
            t.addfile(m, io.BytesIO(data))
    bbox = root / "oidv6-train-annotations-bbox.csv"
    mid = raw.CLASSES[0][0]
    rows = [f"{iid},xclick,{mid},1,0.1,0.5,0.1,0.5,0,0,0,0,0" for iid in ("brokenimage1", "ghostimage01")]
    bbox.write_text(bbox.read_text() + "\n".join(rows) + "\n")
    ghost_line = len(bbox.read_text().splitlines())
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines", "openimages", "--input", str(root), "--output", str(out), "--splits",
           "train", "--min-shards", "2", "--max-bad-fraction", "0.5", "--no-progress"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    q = {e["key"]: e for e in read_quarantine(str(out / "train" / "quarantine.jsonl"))}
    assert q["brokenimage1"]["source"] == f"{tgz}:train_0/brokenimage1.jpg"
    assert "_staging" not in json.dumps(q)
    where = f"oidv6-train-annotations-bbox.csv:{ghost_line}"
    assert q["ghostimage01"]["reason"] == f"annotated ({where}) but no image file"
    assert q["ghostimage01"]["source"] == where
    assert f"1x join: annotated but no image file (e.g. {where})" in r.stdout  # the job's summary names it too
