"""COCO: the job on the official JSON layout (folders and zips) and on TFDS's fake COCO; every numeric field equals
the JSON; bad rows quarantined one by one with their reasons; re-runs byte-identical."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shards.manifest import read_manifest
from shards.verify import verify_split
from tests.raw import coco as raw
from tests.splits import read_samples

TFDS = Path(__file__).parent / "data" / "coco" / "tfds"


def run_job(inp, out, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines", "coco", "--input", str(inp), "--output", str(out), "--min-shards", "2",
           "--max-bad-fraction", "0.8", "--no-progress", *extra]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def converted(coco_splits):
    return coco_splits


def test_numeric_fields_equal_the_json(converted):
    data = raw.dataset()
    split = converted["folders"] / "train"
    m = read_manifest(str(split))
    label_of = {cid: i for i, cid in enumerate(m["category_ids"])}
    assert len(m["classes"]) == 80 and m["classes"][0] == "person"
    got = read_samples(split)
    by_image, seen = {}, set()
    for a in data["train"]["annotations"]:  # the second annotation with id 8 (on another image) is quarantined
        if a["id"] not in seen and a["id"] not in {1, 2, 4, 5, 6}:
            by_image.setdefault(a["image_id"], []).append(a)
        seen.add(a["id"])
    for image in data["train"]["images"][:-1]:  # the last has no file
        s = got[image["file_name"][:-4]]
        anns = sorted(by_image.get(image["id"], []), key=lambda a: a["id"])
        info = json.loads(s["json"])
        assert [a["id"] for a in info["annotations"]] == [a["id"] for a in anns]
        assert len(info["captions"]) == 5
        w, h = image["width"], image["height"]
        expect = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                           for a in anns], np.float32).reshape(-1, 4)  # fmt: skip
        expect = np.minimum(expect, [w, h, w, h]) / np.array([w, h, w, h], np.float32)  # id 3 pokes out: clipped
        assert np.allclose(np.frombuffer(s["boxes"], "<f4").reshape(-1, 4), expect, atol=1e-6)
        assert np.frombuffer(s["labels"], "<i4").tolist() == [label_of[a["category_id"]] for a in anns]
        assert np.frombuffer(s["iscrowd"], np.uint8).tolist() == [a["iscrowd"] for a in anns]
        polygons = np.frombuffer(s["polygons"], "<i4").reshape(-1, 3)
        vertices = np.frombuffer(s["vertices"], "<f4").reshape(-1, 2)
        polys = [(i, p) for i, a in enumerate(anns) if isinstance(a["segmentation"], list) for p in a["segmentation"]]
        assert [int(x) for x in polygons[:, 0]] == [i for i, _ in polys]
        for (_, first, end), (_, p) in zip(polygons.tolist(), polys, strict=True):
            assert np.allclose(vertices[first:end] * [w, h], np.reshape(p, (-1, 2)), atol=1e-3)
        kp = np.frombuffer(s["keypoints"], "<f4").reshape(-1, 17, 3)
        for a, k in zip(anns, kp, strict=True):
            want = np.reshape(a.get("keypoints", [0] * 51), (17, 3)) / [w, h, 1]
            assert np.allclose(k, want, atol=1e-6)
    crowd = json.loads(got[data["train"]["images"][0]["file_name"][:-4]]["json"])
    assert any(a["iscrowd"] == 1 and isinstance(a["segmentation"], dict) for a in crowd["annotations"])  # RLE kept


def test_bad_rows_are_quarantined_one_by_one_and_the_images_kept(converted):
    split = converted["folders"] / "train"
    m = read_manifest(str(split))
    q = {e["key"]: e for e in map(json.loads, (split / "quarantine.jsonl").read_text().splitlines())}
    reasons = {
        "ann-1": "zero or negative width or height",
        "ann-2": "lies outside the 160x120 image",
        "ann-4": "every polygon has fewer than 3 points",
        "ann-5": "category id 999 is not in `categories`",
        "ann-6": "names image id 424242, which no image record has",
        "ann-8": "annotation id 8 appears twice in instances_train2017.json",  # on two images
        "000000000777": "is listed in the JSON but has no file",
        "000000000888": "is in no image record of the split's JSON",
    }
    assert set(q) == set(reasons)
    for key, reason in reasons.items():
        assert reason in q[key]["reason"], q[key]
    assert q["ann-2"]["source"].endswith("annotations/instances_train2017.json")
    assert m["num_samples"] == 10 and m["source"]["inputs_seen"] == 18  # 10 images + 8 quarantined entries
    info = json.loads(read_samples(split)[raw.dataset()["train"]["images"][3]["file_name"][:-4]]["json"])
    assert info["annotations"] == []  # an image without annotations is kept (--drop-empty leaves it out)
    assert verify_split(str(split)).ok


def test_zips_read_in_place_give_the_same_shards_and_reruns_are_identical(converted, tmp_path):
    for split in ("train", "validation"):
        a, b = read_manifest(str(converted["folders"] / split)), read_manifest(str(converted["zips"] / split))
        assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    again = tmp_path / "again"
    run_job(converted["folders"].parent / "raw-folders", again)
    assert read_manifest(str(again / "train")) == read_manifest(str(converted["folders"] / "train"))


def test_side_table_has_a_row_per_annotation(converted):
    import pyarrow.parquet as pq

    split = converted["folders"] / "train"
    m = read_manifest(str(split))
    table = pq.read_table(split / m["side_tables"]["annotations"][0])
    n = sum(len(json.loads(s["json"])["annotations"]) for s in read_samples(split).values())
    assert table.num_rows == n and set(table.column("segmentation").to_pylist()) == {"polygons", "rle"}


def test_tfds_fake_coco_images_disagree_with_their_records_and_a_scaled_copy_converts(tmp_path):
    """TFDS's fake COCO gives ~12x12 images records of 640x480 or 1000x1000: boxes normalized by the record would
    be wrong for the file, so each image is quarantined naming both sizes. A copy whose files are scaled copies
    of the recorded sizes (as people shrink COCO and keep its JSON) converts with its categories."""
    r = run_job(TFDS, tmp_path / "as-is", "--splits", "train", check=False)
    assert r.returncode == 1 and "8 of 8 inputs quarantined" in r.stderr  # 3 files no record names
    reasons = (tmp_path / "as-is" / "train" / "quarantine.jsonl").read_text()
    assert "(1) says 1000x1000 but COCO_train2017_000000000001.jpg is 13x11: its boxes would be normalized" in reasons
    tfds_scaled = raw.scaled_tfds(tmp_path / "tfds")
    out = tmp_path / "out"
    r = run_job(tfds_scaled, out, "--splits", "train,validation,test")
    assert "train: 5 samples" in r.stdout and "validation: 2 samples" in r.stdout and "test: 2 samples" in r.stdout
    assert set(read_manifest(str(out / "test"))["fields"]) == {"jpg", "json"}  # image_info only: no annotations
    tfds = json.loads((TFDS / "trainval_annotations" / "annotations" / "instances_train2017.json").read_text())
    m = read_manifest(str(out / "train"))
    assert m["category_ids"] == sorted(c["id"] for c in tfds["categories"])
    got = read_samples(out / "train")
    for a in tfds["annotations"]:
        image = next(i for i in tfds["images"] if i["id"] == a["image_id"])
        s = got[image["file_name"][:-4]]
        assert np.frombuffer(s["labels"], "<i4").tolist() == [m["category_ids"].index(a["category_id"])]


def test_malformed_json_and_missing_pieces_are_one_line_errors(tmp_path):
    root = raw.write_folders(tmp_path / "raw")
    (root / "annotations" / "instances_val2017.json").write_text('{"images": [{"id": 1,, }]')
    r = run_job(root, tmp_path / "out", "--splits", "validation", check=False)
    assert r.returncode != 0 and "instances_val2017.json: malformed JSON" in r.stderr
    (root / "annotations" / "instances_val2017.json").unlink()
    (root / "annotations" / "person_keypoints_val2017.json").unlink()
    (root / "annotations" / "captions_val2017.json").unlink()
    r = run_job(root, tmp_path / "out2", "--splits", "validation", check=False)
    assert r.returncode == 2 and "split validation (val2017) has no annotations" in r.stderr


def test_records_that_disagree_with_their_file_or_cannot_be_stored_are_quarantined_with_the_reason(tmp_path):
    """Each hostile record is one quarantine entry naming the file (or annotation) and why; the job completes."""
    root = raw.write_folders(tmp_path / "raw")
    for which in ("person_keypoints", "captions"):
        (root / "annotations" / f"{which}_val2017.json").unlink()
    path = root / "annotations" / "instances_val2017.json"
    d = json.loads(path.read_text())
    images = {i["id"]: i for i in d["images"]}
    ids = sorted(images)
    images[ids[0]]["width"] = 1e300  # a size no file has
    images[ids[1]]["width"] = "wide"  # not a number at all
    d["images"].append({**images[ids[2]], "id": 4242})  # a second record for the same file
    d["images"].append({**images[ids[3]], "id": 999, "file_name": "000000000999.jpg", "width": 200})  # wrong size
    (root / "val2017" / "000000000999.jpg").write_bytes((root / "val2017" / f"{ids[3]:012d}.jpg").read_bytes())
    a = {**d["annotations"][0], "image_id": ids[3]}  # on the one sound image
    hostile = {"iscrowd": 300, "area": "12", "category_id": [1], "keypoints": [1, 2], "id": "x",
               "num_keypoints": -1, "segmentation": [[1, 2, "3", 4, 5, 6]]}  # fmt: skip
    for n, (k, v) in enumerate(hostile.items()):
        d["annotations"].append({**a, "id": 90000 + n, k: v})
    path.write_text(json.dumps(d))
    out = tmp_path / "out"
    run_job(root, out, "--splits", "validation", "--max-bad-fraction", "0.95")
    q = [json.loads(x) for x in (out / "validation" / "quarantine.jsonl").read_text().splitlines()]
    reasons = "\n".join(f"{e['key']} {e['source']}: {e['reason']}" for e in q)
    for expected in (
        "width 1e+300 is not a whole number of pixels", "width 'wide' is not a whole number of pixels",
        "(999) says 200x120 but 000000000999.jpg is 160x120: its boxes would be normalized by the wrong size",
        f"{ids[2]:012d}.jpg is named by 2 image records (ids 4242, {ids[2]})", "iscrowd 300 is not 0 or 1",
        "area '12' is not a finite number", "category id [1] is not in", "keypoints are not 17", "annotation id 'x'",
        "num_keypoints -1", "a polygon holds something other than finite numbers",
    ):  # fmt: skip
        assert expected in reasons, (expected, reasons)
    m = read_manifest(str(out / "validation"))
    assert m["source"]["inputs_seen"] == m["num_samples"] + len(q) and verify_split(str(out / "validation")).ok
    got = read_samples(out / "validation")
    assert not {f"{i:012d}" for i in [*ids[:3], 999]} & set(got) and f"{ids[3]:012d}" in got


def test_a_zip_member_that_inflates_past_what_a_sample_can_be_is_quarantined_not_inflated(tmp_path):
    """val2017.zip rebuilt with one image replaced by a deflated member of 100 MiB of zeros (~100 KB stored): the
    writer stops inflating at 200x its size and quarantines it naming the member; the other images convert."""
    import zipfile

    root = raw.write_zips(tmp_path / "raw")
    zpath = root / "val2017.zip"
    with zipfile.ZipFile(zpath) as z:
        members = {n: z.read(n) for n in z.namelist()}
    bomb = sorted(members)[0]
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            if name != bomb:
                z.writestr(name, data)
                continue
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            with z.open(info, "w", force_zip64=True) as w:
                for _ in range(100):
                    w.write(bytes(1 << 20))
    assert zpath.stat().st_size < 1 << 20
    out = tmp_path / "out"
    run_job(root, out, "--splits", "validation")
    (q,) = [json.loads(x) for x in (out / "validation" / "quarantine.jsonl").read_text().splitlines()]
    assert q["source"].endswith(f"val2017.zip:{bomb}") and "refused as a decompression bomb" in q["reason"]
    assert read_manifest(str(out / "validation"))["num_samples"] == len(members) - 1


def test_a_segmentation_nested_100k_deep_is_a_one_line_error_not_gigabytes(tmp_path):
    root = raw.write_folders(tmp_path / "raw")
    path = root / "annotations" / "instances_val2017.json"
    text = path.read_text()
    deep = '"segmentation": ' + "[" * 100_000 + "]" * 100_000 + ', "x": '
    path.write_text(text.replace('"segmentation": ', deep, 1))
    r = run_job(root, tmp_path / "out", "--splits", "validation", check=False)
    assert r.returncode == 2 and "instances_val2017.json: JSON nested deeper than 64 levels at byte" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("which, cut", [("val2017.zip", 0), ("annotations_trainval2017.zip", 0), ("val2017.zip", 500)])
def test_an_empty_or_truncated_zip_is_one_line_naming_it(tmp_path, which, cut):
    root = raw.write_zips(tmp_path / "raw")
    (root / which).write_bytes((root / which).read_bytes()[:cut])
    r = run_job(root, tmp_path / "out", "--splits", "validation", check=False)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert f"{root / which}: not a readable zip archive ({cut} bytes" in lines[0] and "download it again" in lines[0]
