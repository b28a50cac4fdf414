"""`python -m pipelines mnist`: MNIST, Fashion-MNIST or KMNIST as published (IDX files, gzipped or not), written
with the public API (`pipelines.convert`) as a worked example of converting your own data.

    <input>/**/train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]  (split train, 60,000)
    <input>/**/t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]   (split test, 10,000)

One input per image, (images file, labels file, index): the inputs are shuffled, and each writer process reads
(and decompresses) a file once. Samples: `npy` (or `png` with --format png) 28x28 uint8, `cls` 0-9; keys
`<split>_<index>` in the published order.
"""

from __future__ import annotations

import argparse
import functools
import math
import zlib
from collections.abc import Callable

import numpy as np

from pipelines.common.downloads import Dataset, files
from pipelines.common.errors import UsageError
from pipelines.common.job import ConvertJob, Run, register
from shards import storage

__all__ = ["IdxError", "Mnist", "main", "read_idx", "sample"]

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}
MAGIC = {3: 2051, 1: 2049}  # IDX unsigned-byte files: images (3 dims), labels (1 dim)


class IdxError(ValueError):
    """An IDX file that is not what its name says: one line naming it."""


MAX_SIDE = 4096  # an IDX image side larger than this is not MNIST-like data: refused before anything is allocated
# images and labels compress ~5x (MNIST's train images: 9.9 MB -> 47 MB); a .gz that declares more than this many
# times its own size is a decompression bomb, refused before it is inflated
MAX_RATIO = 200


def _inflated_size(url: str, raw: bytes, limit: int) -> tuple[int, bool]:
    """(how many bytes the .gz inflates to, counted 1 MiB at a time and thrown away - at most `limit` + 1 -,
    whether its stream ended properly)."""
    d, n, rest = zlib.decompressobj(16 + zlib.MAX_WBITS), 0, raw
    try:
        while n <= limit and not d.eof:
            n += len(d.decompress(rest, 1 << 20))
            rest = d.unconsumed_tail
            if not rest and not d.eof:
                break
    except zlib.error as e:
        raise IdxError(f"{url}: not a complete gzip file ({e})") from None
    return n, d.eof


def _gunzip(url: str, raw: bytes, size: int, head: int, dims: list[int]) -> bytes:
    """The decompressed file, inflated no further than its dims declare (`size`). A .gz whose dims declare more
    than MAX_RATIO times its own size is never inflated into memory: its inflated size is counted (1 MiB of
    memory) to tell a truncated file (fewer bytes than declared) from a decompression bomb."""
    if size > head + MAX_RATIO * len(raw):
        got, whole = _inflated_size(url, raw, size)
        if got < size and not whole:
            raise IdxError(f"{url}: not a complete gzip file (it ends after {got} decompressed bytes)")
        if got < size:
            raise IdxError(
                f"{url}: {got - head} bytes after the header, its dims {dims} need {size - head} (truncated?)"
            )
        raise IdxError(
            f"{url}: its dims declare {size - head} bytes from {len(raw)} compressed, more than "
            f"{MAX_RATIO}x: refused as a decompression bomb"
        )
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, size + 1)
    except zlib.error as e:
        raise IdxError(f"{url}: not a complete gzip file ({e})") from None
    if len(out) > size:
        raise IdxError(
            f"{url}: more bytes after the header than its dims need ({size - head}): not an IDX file of these dims"
        )
    if not d.eof and len(out) < size:
        raise IdxError(f"{url}: not a complete gzip file (it ends after {len(out)} decompressed bytes)")
    return out


def _dims(url: str, head: bytes, ndim: int) -> list[int]:
    magic = int.from_bytes(head[:4], "big")
    if len(head) < 4 + 4 * ndim or magic != MAGIC[ndim]:
        raise IdxError(f"{url}: magic number {magic:#010x}, not {MAGIC[ndim]} (an IDX file of {ndim}-d unsigned bytes)")
    dims = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if dims[0] < 1:
        raise IdxError(f"{url}: holds no items (dims {dims})")
    if any(not 1 <= d <= MAX_SIDE for d in dims[1:]):
        raise IdxError(f"{url}: dims {dims}: an image side must be 1 to {MAX_SIDE} pixels")
    return dims


@functools.lru_cache(maxsize=4)
def read_idx(url: str, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions (gunzipped if it ends in .gz), checked: magic, dims
    (whole numbers of items and pixels, their product in Python integers: no overflow), and that the bytes after
    the header are exactly what the dims promise - decompressing no more than that."""
    raw = storage.read_bytes(url)
    head_size = 4 + 4 * ndim
    if url.endswith(".gz"):
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, head_size)
        except zlib.error as e:
            raise IdxError(f"{url}: not a gzip file ({e})") from None
    else:
        head = raw[:head_size]
    dims = _dims(url, head, ndim)
    want = math.prod(dims)
    data = _gunzip(url, raw, head_size + want, head_size, dims) if url.endswith(".gz") else raw
    if len(data) - head_size != want:
        raise IdxError(
            f"{url}: {len(data) - head_size} bytes after the header, its dims {dims} need {want} (truncated?)"
        )
    return np.frombuffer(data, np.uint8, count=want, offset=head_size).reshape(dims)


def sample(ref: list) -> dict:
    """The sample of one input: [images URL, labels URL, index, split, format]."""
    images, labels, index, split, fmt = ref
    return {"__key__": f"{split}_{index:05d}", fmt: read_idx(images, 3)[index], "cls": int(read_idx(labels, 1)[index])}


def _find(root: str, name: str) -> str | None:
    hits = [u for u in storage.walk(root) if u.rsplit("/", 1)[-1] in (name, name + ".gz")]
    return hits[0] if hits else None


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # torchvision's mirror of yann.lecun.com's files
DOWNLOAD = Dataset(
    "http://yann.lecun.com/exdb/mnist/",
    "the four IDX files (.gz) in DIR",
    {
        "train": files(
            _MNIST,
            {
                "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
            },
        ),
        "test": files(
            _MNIST,
            {
                "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
                "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
            },
        ),
    },
    ("train", "test"),
)


@register
class Mnist(ConvertJob):
    name = "mnist"
    download = DOWNLOAD
    summary = __doc__.split("\n")[0]
    default_splits = "train,test"
    layouts = "  the four IDX files of MNIST / Fashion-MNIST / KMNIST, gzipped or not, at any depth"

    def add_options(self, p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--format",
            choices=["npy", "png"],
            default="npy",
            help="image field: npy (28 x 28 uint8, nothing to decode when read; default) or png",
        )
        p.add_argument("--variant", choices=sorted(CLASSES), default="mnist", help="class names (default mnist)")

    def inputs(self, run: Run, split: str) -> tuple[list, Callable, dict] | None:
        job, args = run.job, run.args
        if split not in FILES:
            raise UsageError(f"unknown split {split!r}; MNIST has {', '.join(FILES)}")
        images, labels = (_find(job.input, name) for name in FILES[split])
        if images is None and labels is None and not job.splits_given and split != job.splits[-1]:
            return None  # a default split the input does not have (the last one left says what is missing)
        if images is None or labels is None:
            raise UsageError(f"split {split}: {FILES[split][0 if images is None else 1]}[.gz] is not under {job.input}")
        try:
            n, m = len(read_idx(images, 3)), len(read_idx(labels, 1))
        except IdxError as e:
            raise UsageError(str(e)) from None
        if n != m:
            raise UsageError(f"split {split}: {images} holds {n} images but {labels} {m} labels")
        top = int(read_idx(labels, 1).max())
        if top >= len(CLASSES[args.variant]):
            at = int(np.argmax(read_idx(labels, 1)))
            raise UsageError(
                f"{labels}: label {top} at item {at} is not a class of {args.variant} (0 to "
                f"{len(CLASSES[args.variant]) - 1})"
            )
        refs = [[images, labels, i, split, args.format] for i in range(n)]
        return refs, sample, {"fields": [args.format, "cls"], "classes": CLASSES[args.variant]}


main = Mnist().main
