"""`python -m pipelines mnist`: MNIST, Fashion-MNIST or KMNIST as published (IDX files, gzipped or not), written
with the public API (`pipelines.convert`) as a worked example of converting your own data.

    <input>/**/train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]  (split train, 60,000)
    <input>/**/t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]   (split test, 10,000)

One input per image, (images file, labels file, index): the inputs are shuffled, and each writer process reads
(and decompresses) a file once. Samples: `npy` (or `png` with --format png) 28x28 uint8, `cls` 0-9; keys
`<split>_<index>` in the published order.
"""

from __future__ import annotations

import functools
import gzip
import sys
import zlib

import numpy as np

from shards import storage

__all__ = ["IdxError", "main", "read_idx", "sample"]

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                "Ankle boot"],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}  # fmt: skip
MAGIC = {3: 2051, 1: 2049}  # IDX unsigned-byte files: images (3 dims), labels (1 dim)


class IdxError(ValueError):
    """An IDX file that is not what its name says: one line naming it."""


@functools.lru_cache(maxsize=4)
def read_idx(url: str, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions (gunzipped if it ends in .gz), checked: magic, dims,
    and that the bytes after the header are exactly what the dims promise."""
    data = storage.read_bytes(url)
    if url.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:
            raise IdxError(f"{url}: not a complete gzip file ({e})") from None
    magic = int.from_bytes(data[:4], "big")
    if magic != MAGIC[ndim]:
        raise IdxError(f"{url}: magic number {magic:#010x}, not {MAGIC[ndim]} (an IDX file of {ndim}-d unsigned bytes)")
    head = 4 + 4 * ndim
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    want = int(np.prod(dims))
    if len(data) - head != want:
        raise IdxError(f"{url}: {len(data) - head} bytes after the header, its dims {dims} need {want} (truncated?)")
    return np.frombuffer(data, np.uint8, count=want, offset=head).reshape(dims)


def sample(ref: list) -> dict:
    """The sample of one input: [images URL, labels URL, index, split, format]."""
    images, labels, index, split, fmt = ref
    return {"__key__": f"{split}_{index:05d}", fmt: read_idx(images, 3)[index], "cls": int(read_idx(labels, 1)[index])}


def _find(root: str, name: str) -> str | None:
    hits = [u for u in storage.walk(root) if u.rsplit("/", 1)[-1] in (name, name + ".gz")]
    return hits[0] if hits else None


def main(argv: list[str] | None = None) -> int:
    from pipelines.common.options import base_parser, job_options, split_argv
    from pipelines.conversion import convert_split

    ours, beam_args = split_argv(sys.argv[1:] if argv is None else argv)
    p = base_parser("python -m pipelines mnist", __doc__.split("\n")[0], splits="train,test",
                    layouts="  the four IDX files of MNIST / Fashion-MNIST / KMNIST, gzipped or not, at any depth")  # fmt: skip
    p.add_argument("--format", choices=["npy", "png"], default="npy",
                   help="image field: npy (28 x 28 uint8, nothing to decode when read; default) or png")  # fmt: skip
    p.add_argument("--variant", choices=sorted(CLASSES), default="mnist", help="class names (default mnist)")
    args = p.parse_args(ours)
    job = job_options(args, beam_args)
    for split in job.splits:
        if split not in FILES:
            p.error(f"unknown split {split!r}; MNIST has {', '.join(FILES)}")
        images, labels = (_find(job.input, name) for name in FILES[split])
        if images is None or labels is None:
            p.error(f"split {split}: {FILES[split][0 if images is None else 1]}[.gz] is not under {job.input}")
        try:
            n, m = len(read_idx(images, 3)), len(read_idx(labels, 1))
        except IdxError as e:
            p.error(str(e))
        if n != m:
            p.error(f"split {split}: {images} holds {n} images but {labels} {m} labels")
        refs = [[images, labels, i, split, args.format] for i in range(n)]
        status = convert_split(p, job, beam_args, refs, sample, split=split, fields=[args.format, "cls"],
                               classes=CLASSES[args.variant], dataset="mnist")  # fmt: skip
        if status:
            return status
    return 0
