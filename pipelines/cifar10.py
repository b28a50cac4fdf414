"""`python -m pipelines cifar10`: CIFAR-10 as published, written with the public API (`pipelines.convert`) as a
worked example of converting your own data.

    cifar-10-python.tar.gz (read in place) or its folder cifar-10-batches-py/: pickled data_batch_1..5 (train),
    test_batch (test), batches.meta (label names); also the binary version (cifar-10-binary.tar.gz or
    cifar-10-batches-bin/: data_batch_N.bin, test_batch.bin of 3073-byte records, batches.meta.txt)

One input per image (batch file, index): shuffled, and each writer process reads a batch once. Batches are
unpickled by a restricted unpickler that builds NumPy arrays and nothing else (a pickle can run code). Samples:
`npy` 32x32x3 uint8 (or `png` with --format png: 3.6x slower to load, README), `cls` 0-9; keys `<split>_<index>` in the published order (train: batch 1's 10,000, then 2, ...).
"""

from __future__ import annotations

import argparse
import functools
import io
import pickle
import tarfile
import zlib
from collections.abc import Callable

import numpy as np

from pipelines.common.downloads import Dataset, files
from pipelines.common.errors import UsageError
from pipelines.common.job import ConvertJob, Found, Run, register
from shards import storage

__all__ = ["BatchError", "Cifar10", "main", "read_batch", "sample"]

BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SAFE = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}  # _codecs.encode: protocol-2 pickles written by Python 3 store bytes through it


MAX_BATCH = 256 << 20  # a batch of CIFAR-10 (or CIFAR-100) is ~31-155 MB


class BatchError(ValueError):
    """A CIFAR batch that is not what CIFAR-10 publishes: one line naming the file."""


def _latin1(text: object, encoding: object = "latin1") -> bytes:
    """The only `_codecs.encode` a batch needs: a str of the pickle's own bytes back to bytes (1 byte per
    character, so never more than the pickle holds). Nested calls or other codecs (hex, base64: each doubles the
    size, and 30 nested calls in a 785-byte pickle made 533 MB) are refused."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "").replace("_", "") != "latin1":
        raise pickle.UnpicklingError("refuses _codecs.encode other than a string as latin1 (a CIFAR batch's bytes)")
    return text.encode("latin1")


class _Arrays(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE:
            raise pickle.UnpicklingError(f"refuses to build {module}.{name} (a CIFAR batch holds arrays only)")
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        return super().find_class(module, name)


def _member(url: str, member: str) -> bytes:
    if not member:
        return storage.read_bytes(url)
    try:
        with storage.open_read(url) as f, tarfile.open(fileobj=f, mode="r:*") as tar:
            info = tar.getmember(member)
            if not info.isfile():
                raise BatchError(f"{url}: {member} is not a file in the archive")
            if info.size > MAX_BATCH:
                raise BatchError(f"{url}: {member} is {info.size} bytes; a CIFAR batch is about 31 MB")
            return tar.extractfile(info).read()
    except (EOFError, OSError, tarfile.TarError, zlib.error) as e:
        raise BatchError(
            f"{url}: the archive ends early or is damaged reading {member} ({type(e).__name__}: {e})"
        ) from None


@functools.lru_cache(maxsize=6)
def read_batch(url: str, member: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(images N x 32 x 32 x 3 uint8, labels N int64) of one batch file, or of an archive's member."""
    name = f"{url}:{member}" if member else url
    data = _member(url, member)
    if (member or url).endswith(".bin"):  # 1 label byte + 3072 pixel bytes per record
        if len(data) % 3073:
            raise BatchError(f"{name}: {len(data)} bytes is not a whole number of 3073-byte CIFAR-10 records")
        rows = np.frombuffer(data, np.uint8).reshape(-1, 3073)
        return rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), rows[:, 0].astype(np.int64)
    try:
        d = _Arrays(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:
        raise BatchError(f"{name}: not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()} if isinstance(d, dict) else {}
    raw_labels = d.get("labels")
    if not isinstance(d.get("data"), np.ndarray) or not isinstance(raw_labels, list | np.ndarray):
        raise BatchError(f"{name}: not a CIFAR-10 python batch (its 'data' is not an array or 'labels' not a list)")
    if isinstance(raw_labels, list) and not all(isinstance(x, int) for x in raw_labels):
        raise BatchError(f"{name}: its labels are not whole numbers")
    pixels, labels = d["data"], np.asarray(raw_labels)
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072 or labels.shape != (len(pixels),):
        raise BatchError(
            f"{name}: data is {pixels.dtype} {list(pixels.shape)} with {labels.size} labels; CIFAR-10 "
            "batches hold N x 3072 uint8 and N labels"
        )
    if labels.size and not (labels.min() >= 0 and labels.max() < len(CLASSES)):
        raise BatchError(
            f"{name}: label {int(labels.max() if labels.max() >= len(CLASSES) else labels.min())} is not "
            "a CIFAR-10 class (0 to 9)"
        )
    return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)


def sample(ref: list) -> dict:
    """The sample of one input: [batch URL, archive member or "", index in the batch, key, format]."""
    url, member, index, key, fmt = ref
    images, labels = read_batch(url, member)
    return {"__key__": key, fmt: np.ascontiguousarray(images[index]), "cls": int(labels[index])}


def _batches(root: str) -> dict[str, list[tuple[str, str]]]:
    """Each split's batches as (file URL, member in an archive or "")."""
    found: dict[str, tuple[str, str]] = {}
    for url in storage.walk(root):
        base = url.rsplit("/", 1)[-1]
        if base.endswith((".tar.gz", ".tgz", ".tar")):
            try:
                with storage.open_read(url) as f, tarfile.open(fileobj=f, mode="r:*") as tar:
                    for m in tar.getmembers():
                        found.setdefault(m.name.rsplit("/", 1)[-1], (url, m.name))
            except (EOFError, OSError, tarfile.TarError, zlib.error) as e:
                raise BatchError(f"{url}: the archive ends early or is damaged ({type(e).__name__}: {e})") from None
        else:
            found.setdefault(base, (url, ""))
    out = {}
    for split, names in BATCHES.items():
        py = [found.get(n) for n in names]
        out[split] = py if all(py) else [found.get(n + ".bin") for n in names]
    return out


DOWNLOAD = Dataset(
    "https://www.cs.toronto.edu/~kriz/cifar.html",
    "cifar-10-python.tar.gz in DIR (read in place)",
    {
        "python": files(
            "https://www.cs.toronto.edu/~kriz/", {"cifar-10-python.tar.gz": "md5:c58f30108f718f92721af3b95e74349a"}
        )
    },
    ("python",),
)


@register
class Cifar10(ConvertJob):
    name = "cifar10"
    download = DOWNLOAD
    summary = __doc__.split("\n")[0]
    default_splits = "train,test"
    layouts = "  cifar-10-python.tar.gz or cifar-10-batches-py/ (or the binary version), at any depth"

    def add_options(self, p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--format",
            choices=["npy", "png"],
            default="npy",
            help="image field: npy (32 x 32 x 3 uint8: nothing to decode when read; default) or png",
        )

    def detect(self, run: Run) -> Found:
        try:
            return Found(_batches(run.job.input))
        except BatchError as e:
            raise UsageError(str(e)) from None

    def inputs(self, run: Run, split: str) -> tuple[list, Callable, dict] | None:
        job, batches = run.job, run.layout
        if split not in BATCHES:
            raise UsageError(f"unknown split {split!r}; CIFAR-10 has {', '.join(BATCHES)}")
        missing = [n for n, b in zip(BATCHES[split], batches[split], strict=True) if b is None]
        if len(missing) == len(BATCHES[split]) and not job.splits_given and split != job.splits[-1]:
            return None  # a default split the input does not have
        if missing:
            raise UsageError(f"split {split}: {', '.join(missing)} (or .bin) not found under {job.input}")
        refs, start = [], 0
        for url, member in batches[split]:
            try:
                n = len(read_batch(url, member)[1])
            except BatchError as e:
                raise UsageError(str(e)) from None
            refs += [[url, member, i, f"{split}_{start + i:05d}", run.args.format] for i in range(n)]
            start += n
        return refs, sample, {"fields": [run.args.format, "cls"], "classes": CLASSES}


main = Cifar10().main
