"""Writes a small raw ImageNet in each layout people have, from the same images, awkward files included.

`LAYOUTS` is what the pipeline conformance suite runs (tests/test_conformance_pipelines.py).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from infra.photos import photo_jpeg
from pipelines.imagenet import WNIDS

DATA = Path(__file__).parents[1] / "data" / "imagenet"
CLASSES = [WNIDS[i] for i in (0, 1, 100, 500, 970, 999)]
UNKNOWN = "n99999999"


def _progressive_jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo_jpeg(i, size=(96, 72)))).save(buf, "JPEG", progressive=True, quality=90)
    return buf.getvalue()


def logical_dataset() -> tuple[dict[str, dict[str, bytes]], list[tuple[str, str, bytes]]]:
    """({wnid: {file name: bytes}} for train, [(file name, wnid, bytes)] for val in file-name order)."""
    train: dict[str, dict[str, bytes]] = {w: {} for w in CLASSES}
    for c, w in enumerate(CLASSES):
        for j in range(8):
            train[w][f"{w}_{1000 + j}.JPEG"] = photo_jpeg(100 * c + j, size=(96, 72))
    awkward = {
        "cmyk": (DATA / "pil_sample_cmyk.jpg").read_bytes(),
        "png": (DATA / "hopper.png").read_bytes(),
        "gray": (DATA / "hopper_gray.jpg").read_bytes(),
        "truncated": (DATA / "truncated_jpeg.jpg").read_bytes(),
        "empty": b"",
        "progressive": _progressive_jpeg(7),
        "broken": (DATA / "broken.png").read_bytes(),
    }
    for j, (_, data) in enumerate(awkward.items()):
        w = CLASSES[j % len(CLASSES)]
        train[w][f"{w}_{9000 + j}.JPEG"] = data
    val = [
        (f"ILSVRC2012_val_{i + 1:08d}.JPEG", CLASSES[i % len(CLASSES)], photo_jpeg(5000 + i, size=(96, 72)))
        for i in range(12)
    ]
    val.append((f"ILSVRC2012_val_{13:08d}.JPEG", UNKNOWN, photo_jpeg(5013, size=(96, 72))))  # label not in the 1000
    return train, val


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _devkit(val: list[tuple[str, str, bytes]]) -> bytes:
    """ILSVRC2012_devkit_t12.tar.gz with meta.mat (ILSVRC2012_ID -> WNID, deliberately not sorted order)."""
    from scipy.io import savemat

    order = list(reversed(WNIDS))  # ILSVRC2012_ID 1 is the last sorted wnid: the mapping must be used
    synsets = np.zeros(
        (len(order),), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    )
    for i, w in enumerate(order):
        synsets[i] = (i + 1, w, f"words for {w}", 0)
    meta = io.BytesIO()
    savemat(meta, {"synsets": synsets})
    truth = "".join(f"{order.index(w) + 1 if w in order else 1001}\n" for _, w, _ in val)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in (
            ("data/meta.mat", meta.getvalue()),
            ("data/ILSVRC2012_validation_ground_truth.txt", truth.encode()),
        ):
            ti = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/{name}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def write_archives(root: Path) -> Path:
    train, val = logical_dataset()
    root.mkdir(parents=True, exist_ok=True)
    (root / "ILSVRC2012_img_train.tar").write_bytes(_tar({f"{w}.tar": _tar(files) for w, files in train.items()}))
    (root / "ILSVRC2012_img_val.tar").write_bytes(_tar({name: data for name, _, data in val}))
    (root / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(_devkit(val))
    return root


def write_kaggle(root: Path) -> Path:
    train, val = logical_dataset()
    base = root / "ILSVRC" / "Data" / "CLS-LOC"
    for w, files in train.items():
        (base / "train" / w).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (base / "train" / w / name).write_bytes(data)
    (base / "val").mkdir(parents=True)
    rows = ["ImageId,PredictionString"]
    for name, w, data in val:
        (base / "val" / name).write_bytes(data)
        rows.append(f"{name.split('.')[0]},{w} 10 20 60 50 {w} 0 0 5 5")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} some words\n" for w in WNIDS))
    return root


def write_folders(root: Path) -> Path:
    train, val = logical_dataset()
    for w, files in train.items():
        (root / "train" / w).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (root / "train" / w / name).write_bytes(data)
    for name, w, data in val:
        (root / "val" / w).mkdir(parents=True, exist_ok=True)
        (root / "val" / w / name).write_bytes(data)
    return root


LAYOUTS = {"archives": write_archives, "kaggle": write_kaggle, "folders": write_folders}

# the loader conformance suite: loader keyword arguments, and per output (mean, 99th percentile) of |DALI - reference|
# in the output's units (normalized pixels: 0.052 is 3 levels of 255, 0.35 is 20 levels)
LOADER = {"kwargs": {"image_size": 32}, "tolerance": {"image": (0.052, 0.35)}}
