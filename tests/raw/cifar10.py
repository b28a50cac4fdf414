"""Writes a small CIFAR-10 as published: `cifar-10-python.tar.gz` holding `cifar-10-batches-py/` with
`data_batch_1..5`, `test_batch` (dicts with bytes keys: b"batch_label", b"labels" a list, b"data" N x 3072 uint8
with the red plane, then green, then blue, row-major, b"filenames") and `batches.meta`, pickled as CIFAR's Python 2
code did (protocol 2); or the unpacked folder; or the binary version's 3073-byte records. Images are photo-like
crops (`shards.photos`).

`LAYOUTS` is what the pipeline conformance suite runs; `LOADER` what the loader conformance suite uses.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from infra.photos import source_photos

PER_BATCH = 6
NAMES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def image(i: int) -> np.ndarray:
    """A 32 x 32 x 3 photo crop."""
    rng = np.random.default_rng(i)
    photo = source_photos()[i % len(source_photos())]
    h, w = photo.shape[:2]
    s = int(rng.integers(40, min(h, w)))
    y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
    return np.asarray(Image.fromarray(photo[y : y + s, x : x + s]).resize((32, 32), Image.BILINEAR))


def batches() -> dict[str, tuple[np.ndarray, list[int]]]:
    """Each batch's images N x 32 x 32 x 3 and labels, in the published order."""
    out = {}
    for b, name in enumerate(NAMES):
        ids = [b * PER_BATCH + k for k in range(PER_BATCH)]
        out[name] = (np.stack([image(i) for i in ids]), [(i * 3) % 10 for i in ids])
    return out


def _pickled(name: str, images: np.ndarray, labels: list[int]) -> bytes:
    d = {b"batch_label": f"{name} of 6".encode(), b"labels": labels,
         b"data": images.transpose(0, 3, 1, 2).reshape(len(images), 3072),
         b"filenames": [f"img_{name}_{k}.png".encode() for k in range(len(labels))]}  # fmt: skip
    return pickle.dumps(d, protocol=2)


def _files(binary: bool) -> dict[str, bytes]:
    if binary:
        files = {f"cifar-10-batches-bin/{n}.bin": b"".join(bytes([lab]) + im.transpose(2, 0, 1).tobytes()
                 for im, lab in zip(*batches()[n], strict=True)) for n in NAMES}  # fmt: skip
        files["cifar-10-batches-bin/batches.meta.txt"] = "\n".join(CLASSES).encode()
        return files
    files = {f"cifar-10-batches-py/{n}": _pickled(n, *b) for n, b in batches().items()}
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}, 2)
    return files


def write_tar_gz(root: Path, *, binary: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    name = "cifar-10-binary.tar.gz" if binary else "cifar-10-python.tar.gz"
    with tarfile.open(root / name, "w:gz") as tar:
        for path, data in sorted(_files(binary).items()):
            info = tarfile.TarInfo(path)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return root


def write_folder(root: Path) -> Path:
    for path, data in _files(False).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return root


LAYOUTS = {"python-tar-gz": write_tar_gz, "python-folder": write_folder,
           "binary-tar-gz": lambda root: write_tar_gz(root, binary=True)}  # fmt: skip
LOADER = {"kwargs": {}, "tolerance": {"image": (1e-5, 1e-4)}}  # float32 normalization: DALI multiplies by 1/std
