"""Writes a small COCO 2017 in the official layout: instances, person keypoints and captions JSONs as COCO
publishes them (json.dump of {info, licenses, images, annotations, categories}), images drawn as solid-colour
polygons on a noisy background (so a test can check that a box or mask still covers its colour), awkward rows
included; as folders or as the zips people download (images stored, JSONs deflated in annotations_trainval2017.zip).

`LAYOUTS` is what the pipeline conformance suite runs (tests/test_conformance_pipelines.py).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

DATA = Path(__file__).parents[1] / "data" / "coco" / "tfds"
CATEGORIES = json.loads((DATA / "trainval_annotations" / "annotations" / "instances_val2017.json").read_text())[
    "categories"
]
COLOURS = {1: (230, 40, 40), 3: (40, 200, 60), 18: (40, 80, 230), 62: (240, 220, 30)}  # person, car, dog, chair
SIZE = (160, 120)
SPLITS = {"train": 10, "val": 4}


def _object(rng: np.random.Generator, cat: int, slot: int, w: int, h: int) -> dict[str, Any]:
    """A convex polygon (a jittered rectangle) in vertical strip `slot` of three (objects never overlap, so every
    pixel of an object's mask shows its colour), with its box and area."""
    x0, y0 = slot * w / 3 + rng.uniform(2, 8), rng.uniform(5, h * 0.4)
    x1, y1 = x0 + rng.uniform(25, w / 3 - 12), y0 + rng.uniform(25, h - y0 - 6)
    poly = [x0, y0, x1, y0 + 3, x1 - 2, y1, x0 + 2, y1 - 3]
    xs, ys = poly[0::2], poly[1::2]
    bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(4)))
    return {"category_id": cat, "segmentation": [[round(v, 2) for v in poly]], "bbox": [round(v, 2) for v in bbox],
            "area": round(area, 2), "iscrowd": 0}  # fmt: skip


def _draw(seed: int, objects: list[dict[str, Any]], w: int, h: int) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray((rng.normal(128, 25, (h, w, 3))).clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(im)
    for o in objects:
        if o["segmentation"] and isinstance(o["segmentation"], list):
            d.polygon(list(zip(o["segmentation"][0][0::2], o["segmentation"][0][1::2], strict=True)),
                      fill=COLOURS[o["category_id"]])  # fmt: skip
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def logical(split: str) -> dict[str, Any]:
    """The split as COCO's JSONs have it, plus the image bytes: {images, annotations, keypoints, captions, files}."""
    rng = np.random.default_rng(7 if split == "train" else 8)
    w, h = SIZE
    images, anns, files, captions = [], [], {}, []
    next_id = 1000 if split == "train" else 5000
    for i in range(SPLITS[split]):
        image_id = (100 if split == "train" else 900) + i
        name = f"{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": name, "width": w, "height": h, "license": 1,
                       "coco_url": f"http://images.cocodataset.org/{split}2017/{name}", "date_captured": ""})  # fmt: skip
        cats = rng.choice(list(COLOURS), 1 + i % 3)
        objects = [] if i == 3 else [_object(rng, int(c), slot, w, h) for slot, c in enumerate(cats)]
        for o in objects:
            o.update(id=next_id, image_id=image_id)
            if o["category_id"] == 1:  # a person: 17 keypoints inside its box, some not labelled
                x, y, bw, bh = o["bbox"]
                kp = []
                for k in range(17):
                    v = 0 if k % 5 == 4 else 2
                    kp += [round(x + bw * ((k % 4) + 0.5) / 4, 2), round(y + bh * ((k // 4) + 0.5) / 5, 2), v]
                    kp[-3:-1] = [0, 0] if v == 0 else kp[-3:-1]
                o.update(keypoints=kp, num_keypoints=sum(1 for k in range(17) if kp[3 * k + 2] > 0))
            next_id += 1
        anns += objects
        files[name] = _draw(image_id, objects, w, h)
        captions += [{"id": 10 * image_id + c, "image_id": image_id, "caption": f"picture {image_id}, caption {c}"}
                     for c in range(5)]  # fmt: skip
    return {"images": images, "annotations": anns, "files": files, "captions": captions}


def _awkward(d: dict[str, Any]) -> None:
    """Rows COCO-format files are known to carry, each with the quarantine reason the job must give."""
    img = d["images"][0]
    box = lambda bbox, **kw: {"image_id": img["id"], "category_id": 3, "bbox": bbox, "area": 10.0, "iscrowd": 0,  # noqa: E731
                              "segmentation": [[10, 10, 20, 10, 20, 20]], **kw}  # fmt: skip
    d["annotations"] += [
        box([10, 10, 0, 5], id=1),  # zero width
        box([400, 300, 20, 20], id=2),  # far outside the 160x120 image
        box([150, 100, 14, 24], id=3),  # slightly outside: clipped, kept
        box([10, 10, 5, 5], id=4, segmentation=[[1, 2, 3, 4]]),  # a polygon of 2 points
        box([10, 10, 5, 5], id=5, category_id=999),  # unknown category
        box([10, 10, 5, 5], id=6, image_id=424242),  # no such image
        box([12, 12, 6, 6], id=8),
        box([14, 14, 6, 6], id=8, image_id=d["images"][1]["id"]),  # id 8 again, on another image
        {"id": 7, "image_id": img["id"], "category_id": 1, "iscrowd": 1, "bbox": [30, 30, 40, 30], "area": 1200.0,
         "segmentation": {"size": [120, 160], "counts": [4830, 30, 90, 30, 14250]}},  # crowd, uncompressed RLE
    ]  # fmt: skip
    d["images"].append({"id": 777, "file_name": "000000000777.jpg", "width": 160, "height": 120})  # no file
    d["files"]["000000000888.jpg"] = _draw(888, [], 160, 120)  # not listed


def _json(d: dict[str, Any], which: str) -> bytes:
    people = [a for a in d["annotations"] if "keypoints" in a]
    anns = {"instances": [{k: v for k, v in a.items() if k not in ("keypoints", "num_keypoints")}
                          for a in d["annotations"]],
            "person_keypoints": people, "captions": d["captions"]}[which]  # fmt: skip
    cats = CATEGORIES if which != "person_keypoints" else [c | {"keypoints": [f"k{i}" for i in range(17)],
                                                                 "skeleton": [[1, 2]]} for c in CATEGORIES if c["id"] == 1]  # fmt: skip
    body = {"info": {"year": 2017, "version": "1.0", "description": "shardkit test COCO"},
            "licenses": [{"id": 1, "name": "CC BY 2.0", "url": "http://creativecommons.org/licenses/by/2.0/"}],
            "images": [{k: v for k, v in i.items()} for i in d["images"]], "annotations": anns}  # fmt: skip
    if which != "captions":
        body["categories"] = cats
    return json.dumps(body).encode()


def dataset() -> dict[str, dict[str, Any]]:
    out = {s: logical(s) for s in SPLITS}
    _awkward(out["train"])
    return out


def write_folders(root: Path) -> Path:
    for split, d in dataset().items():
        (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
        for name, data in d["files"].items():
            (root / f"{split}2017" / name).write_bytes(data)
        (root / "annotations").mkdir(exist_ok=True)
        for which in ("instances", "person_keypoints", "captions"):
            (root / "annotations" / f"{which}_{split}2017.json").write_bytes(_json(d, which))
    return root


def write_zips(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = dataset()
    with zipfile.ZipFile(root / "annotations_trainval2017.zip", "w", zipfile.ZIP_DEFLATED) as ann:
        for split, d in data.items():
            with zipfile.ZipFile(root / f"{split}2017.zip", "w", zipfile.ZIP_STORED) as z:
                for name, b in d["files"].items():
                    z.writestr(f"{split}2017/{name}", b)
            for which in ("instances", "person_keypoints", "captions"):
                ann.writestr(f"annotations/{which}_{split}2017.json", _json(d, which))
    return root


LAYOUTS = {"folders": write_folders, "zips": write_zips}

# the loader conformance suite (tests/test_conformance_loaders.py): the eval graph against `reference_eval`
LOADER = {"kwargs": {"image_size": 64, "max_size": 96}, "tolerance": {"image": (0.052, 0.35)}}


def scaled_tfds(dest: Path) -> Path:
    """TFDS's fake COCO with each image a scaled copy (1/10) of the size its record says: TFDS's files are ~12x12
    pixels under records of 640x480 or 1000x1000, which the job quarantines (the boxes would be normalized by the
    wrong size); people who shrink COCO keep its JSON, and such a copy converts."""
    import shutil

    shutil.copytree(DATA, dest)
    for ann in dest.glob("*/annotations/*.json"):
        for image in json.loads(ann.read_text())["images"]:
            for f in dest.glob(f"*/*/{image['file_name']}"):
                size = (round(image["width"] / 10), round(image["height"] / 10))
                Image.open(f).convert("RGB").resize(size).save(f, quality=90)
    return dest
