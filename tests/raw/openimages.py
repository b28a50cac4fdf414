"""Raw Open Images in the layouts people have: a generated CVDF-style one (photo-like images in `.tar.gz`, V6 CSVs,
rotated images whose boxes mark a red patch), and the corpus copies in tests/data/openimages (TFDS's fake V4 tars
and Challenge-2019 zips, Datumaro's V6 folders), quirks included.

`LAYOUTS` is what the pipeline conformance suite runs; the first one feeds the loader conformance suite.
"""

from __future__ import annotations

import csv
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from infra.photos import photo_jpeg

DATA = Path(__file__).parents[1] / "data" / "openimages"
CLASSES = [("/m/01g317", "Person"), ("/m/0199g", "Bicycle"), ("/m/0k4j", "Car"), ("/m/01yrx", "Cat")]
BOX_HEADER = (
    "ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,IsGroupOf,IsDepiction,IsInside"
)
META_HEADER = "ImageID,Subset,OriginalURL,OriginalLandingURL,License,AuthorProfileURL,Author,Title,OriginalSize,OriginalMD5,Thumbnail300KURL,Rotation"
RED = (230, 20, 20)


def image_id(split: str, i: int) -> str:
    return f"{(0x1000 if split == 'train' else 0x2000) + i:016x}"


def _photo_with_patch(seed: int, size: tuple[int, int], box: tuple[float, float, float, float]) -> Image.Image:
    """A photo-like image with a red patch where `box` (normalized xmin, xmax, ymin, ymax) says."""
    im = Image.open(io.BytesIO(photo_jpeg(seed, size=size))).convert("RGB")
    w, h = im.size
    x0, x1, y0, y1 = box
    im.paste(RED, (round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)))
    return im


def generated(split_counts: dict[str, int] | None = None) -> dict:
    """The logical content of the generated layout: {split: [(id, rotation, upright box, label mid)]}; boxes are
    normalized (xmin, xmax, ymin, ymax) on the upright image."""
    out = {}
    for split, n in (split_counts or {"train": 24, "validation": 8}).items():
        rows = []
        for i in range(n):
            rng = np.random.default_rng(i + (0 if split == "train" else 1000))
            x0, y0 = rng.uniform(0.05, 0.5, size=2)
            box = (float(x0), float(x0 + rng.uniform(0.2, 0.45)), float(y0), float(y0 + rng.uniform(0.2, 0.45)))
            rotation = {3: 90, 7: 270, 11: 180}.get(i, 0)
            rows.append((image_id(split, i), rotation, tuple(round(v, 4) for v in box), CLASSES[i % len(CLASSES)][0]))
        out[split] = rows
    return out


def file_box(box: tuple[float, float, float, float], rotation: int) -> tuple[float, ...]:
    """The CSV's box: Open Images annotates the file as stored, and says how far (counter-clockwise) to rotate
    image and boxes together; the stored file is the upright image turned back by `rotation`."""
    x0, x1, y0, y1 = box
    if rotation == 90:  # stored = upright turned 90 clockwise: (x, y) -> (1 - y, x)
        out = (1 - y1, 1 - y0, x0, x1)
    elif rotation == 180:
        out = (1 - x1, 1 - x0, 1 - y1, 1 - y0)
    elif rotation == 270:  # stored = upright turned 90 counter-clockwise: (x, y) -> (y, 1 - x)
        out = (y0, y1, 1 - x1, 1 - x0)
    else:
        out = box
    return tuple(round(v, 4) for v in out)


def _stored(im: Image.Image, rotation: int) -> bytes:
    """The file as distributed: the upright image turned back, so that rotating it CCW by `rotation` restores it."""
    buf = io.BytesIO()
    im.rotate(-rotation, expand=True).save(buf, "JPEG", quality=92)
    return buf.getvalue()


def write_generated(root: Path, counts: dict[str, int] | None = None, size: tuple[int, int] = (160, 120)) -> Path:
    """The generated layout; the benchmark uses it with larger counts and photo sizes (README, Benchmarks)."""
    root.mkdir(parents=True, exist_ok=True)
    content = generated(counts)
    for split, rows in content.items():
        folder = "train_0" if split == "train" else split
        with tarfile.open(root / f"{folder}.tar.gz", "w:gz") as tf:
            for n, (iid, rotation, box, _) in enumerate(rows):
                data = _stored(_photo_with_patch(n, (size[0] + 16 * (n % 3), size[1]), box), rotation)
                info = tarfile.TarInfo(f"{folder}/{iid}.jpg")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        prefix = "oidv6-train" if split == "train" else split
        boxes = [BOX_HEADER] + [
            "{},xclick,{},1,{},{},{},{},0,0,0,0,0".format(iid, mid, *file_box(b, rotation))
            for iid, rotation, b, mid in rows
        ]
        (root / f"{prefix}-annotations-bbox.csv").write_text("\n".join(boxes) + "\n")
        labels = ["ImageID,Source,LabelName,Confidence"]
        for iid, _, _, mid in rows:
            labels += [f"{iid},verification,{mid},1", f"{iid},verification,{CLASSES[0][0]},0"]
        (root / f"{prefix}-annotations-human-imagelabels-boxable.csv").write_text("\n".join(labels) + "\n")
        meta = [META_HEADER] + [
            f"{iid},{split},https://farm.example/{iid}.jpg,,https://creativecommons.org/licenses/by/2.0/,,A. Author,"
            f"Photo {iid},1000,md5,,{float(rotation)}"
            for iid, rotation, _, _ in rows
        ]
        name = (
            "oidv6-train-images-with-labels-with-rotation.csv"
            if split == "train"
            else f"{split}-images-with-rotation.csv"
        )
        (root / name).write_text("\n".join(meta) + "\n")
    with open(root / "oidv6-class-descriptions-boxable.csv", "w", newline="") as f:
        csv.writer(f).writerows(CLASSES)  # no header row, as distributed
    return root


def _copy(name: str):
    def write(root: Path) -> Path:
        shutil.copytree(DATA / name, root)
        return root

    return write


def write_mmdetection(root: Path) -> Path:
    """mmdetection's real one-image excerpt (V6 boxes, header-less boxable classes, hierarchy) with a photo-like
    stand-in for its image, which the corpus does not ship."""
    shutil.copytree(DATA / "mmdetection", root / "annotations")
    (root / "train").mkdir()
    (root / "train" / "0001eeaf4aed83f9.jpg").write_bytes(photo_jpeg(1, size=(256, 192)))
    return root


LAYOUTS = {
    "generated": write_generated,
    "v4": _copy("v4"),
    "challenge2019": _copy("challenge2019"),
    "v6": _copy("v6"),
    "v5": _copy("v5"),
    "mmdetection": write_mmdetection,
}
EXTRA_ARGS = ["--keep-unannotated"]  # Datumaro's validation image has no annotations at all
LAYOUT_ARGS = {"v5": ["--splits", "train,test"], "mmdetection": ["--splits", "train"]}  # the splits they have

# the loader conformance suite: loader keyword arguments, and per output (mean, 99th percentile) of |DALI - reference|
LOADER = {"kwargs": {"image_size": 64}, "tolerance": {"image": (0.052, 0.35)}}
