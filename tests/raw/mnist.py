"""Writes a small MNIST as published: the four IDX files (big-endian magic 2051 / 2049, then the dims, then
uint8 pixels / labels), gzipped as yann.lecun.com serves them or plain as people unpack them. The digits are drawn
(a stroke figure per class on a dark background), not noise.

`LAYOUTS` is what the pipeline conformance suite runs; `LOADER` what the loader conformance suite uses.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SPLITS = {"train": ("train", 48), "test": ("t10k", 16)}


def digit(i: int, label: int) -> np.ndarray:
    """A 28 x 28 drawing of `label`'s stroke figure, jittered by `i`."""
    rng = np.random.default_rng(i)
    im = Image.new("L", (28, 28), 0)
    d = ImageDraw.Draw(im)
    cx, cy = 14 + rng.integers(-2, 3), 14 + rng.integers(-2, 3)
    pts = [(cx + 8 * np.cos(a), cy + 9 * np.sin(a)) for a in np.linspace(0, 2 * np.pi * (label + 1) / 10, label + 3)]
    d.line([(int(x), int(y)) for x, y in pts], fill=int(rng.integers(200, 256)), width=2)
    return np.asarray(im)


def idx(array: np.ndarray) -> bytes:
    head = (0x0800 + array.ndim).to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return head + array.astype(np.uint8).tobytes()


def arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    n = SPLITS[split][1]
    labels = (np.arange(n) * 7 + (split == "test")) % 10
    return np.stack([digit(k + 1000 * (split == "test"), int(lab)) for k, lab in enumerate(labels)]), labels


def write(root: Path, *, gz: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, (prefix, _) in SPLITS.items():
        images, labels = arrays(split)
        for kind, data in (("images-idx3", idx(images)), ("labels-idx1", idx(labels))):
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
            else:
                (root / name).write_bytes(data)
    return root


LAYOUTS = {"gz": write, "plain": lambda root: write(root, gz=False)}
LOADER = {"kwargs": {}, "tolerance": {"image": (1e-5, 1e-4)}}  # float32 normalization: DALI multiplies by 1/std
