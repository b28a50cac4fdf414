"""The worked examples: MNIST (real t10k files, as published) and CIFAR-10 (TFDS's fakes in both published
layouts, a generated python tar.gz) round-trip through shards and their loaders equal to the published arrays;
malformed files are one-line errors naming them."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from shards.manifest import read_manifest
from shards.verify import verify_split
from tests.raw import cifar10 as raw_cifar
from tests.splits import read_samples

pytest.importorskip("apache_beam")
DATA = Path(__file__).parent / "data"


def run(dataset: str, inp, out, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipelines", dataset, "--input", str(inp), "--output", str(out), "--min-shards", "2",
           "--no-progress", *extra]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def published_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The real t10k files parsed here with NumPy, as the format's page describes (independent of the job)."""
    images = np.frombuffer(gzip.decompress((DATA / "mnist/t10k-images-idx3-ubyte.gz").read_bytes()), np.uint8)
    labels = np.frombuffer(gzip.decompress((DATA / "mnist/t10k-labels-idx1-ubyte.gz").read_bytes()), np.uint8)
    return images[16:].reshape(10000, 28, 28), labels[8:]


@pytest.fixture(scope="module")
def mnist_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("mnist")
    inp = out / "raw"
    inp.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(DATA / "mnist" / name, inp / name)
    r = run("mnist", inp, out / "png", "--splits", "test", "--format", "png")
    assert "test: 10000 samples" in r.stdout
    return out


def test_real_mnist_round_trips_through_shards_and_the_loader(mnist_split):
    pytest.importorskip("nvidia.dali")
    from loaders import mnist_dali

    images, labels = published_mnist()
    split = mnist_split / "png" / "test"
    assert verify_split(str(split)).ok and read_manifest(str(split))["classes"][7] == "7"
    loader = mnist_dali(str(split), batch_size=500, device="cpu", return_keys=True, train=False)
    seen = 0
    for batch in loader:
        assert batch["image"].shape == (500, 1, 28, 28)
        index = np.array([int(k.split("_")[1]) for k in batch["key"]])
        pixels = np.rint(batch["image"].numpy()[:, 0] * 0.3081 * 255 + 0.1307 * 255)
        assert np.array_equal(pixels, images[index]) and np.array_equal(batch["label"].numpy(), labels[index])
        seen += len(index)
    assert seen == 10000


def test_mnist_npy_format_the_default_equals_the_published_arrays(tmp_path):
    inp = tmp_path / "raw"
    inp.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (inp / name[:-3]).write_bytes(gzip.decompress((DATA / "mnist" / name).read_bytes()))  # unpacked, as people do
    run("mnist", inp, tmp_path / "out", "--splits", "test", "--variant", "fashion")
    images, labels = published_mnist()
    got = read_samples(tmp_path / "out" / "test")
    assert len(got) == 10000 and read_manifest(str(tmp_path / "out" / "test"))["classes"][9] == "Ankle boot"
    for key in ("test_00000", "test_04242", "test_09999"):
        i = int(key.split("_")[1])
        assert np.array_equal(np.load(io.BytesIO(got[key]["npy"])), images[i]) and int(got[key]["cls"]) == labels[i]


@pytest.mark.parametrize(
    "files, message",
    [
        ({"tfds/test-image": "t10k-images-idx3-ubyte", "tfds/test-label": "t10k-labels-idx1-ubyte"},
         "t10k-images-idx3-ubyte: magic number 0x31313131, not 2051"),
        ({"datumaro/t10k-images-idx3-ubyte.gz": None, "datumaro/t10k-labels-idx1-ubyte.gz": None},
         "t10k-images-idx3-ubyte.gz: 2352 bytes after the header, its dims [2352, 28, 28] need 1843968"),
        ({"truncated/t10k-images-idx3-ubyte.gz": None, "t10k-labels-idx1-ubyte.gz": None},
         "t10k-images-idx3-ubyte.gz: not a complete gzip file"),
    ],
)  # fmt: skip
def test_malformed_idx_files_are_one_line_errors_naming_the_file(files, message, tmp_path):
    inp = tmp_path / "raw"
    inp.mkdir()
    for src, name in files.items():
        shutil.copy(DATA / "mnist" / src, inp / (name or Path(src).name))
    r = run("mnist", inp, tmp_path / "out", "--splits", "test", check=False)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr


def _idx(dims: list[int], data: bytes, magic: int = 2051) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + data


def _gz_bomb() -> bytes:
    """A ~1 MB .gz of an IDX file that declares and holds 1 GiB of images, compressed in 1 MiB steps (this
    process never holds the gigabyte)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [z.compress(_idx([2**20, 32, 32], b""))]
    zeros = bytes(2**20)
    parts += [z.compress(zeros) for _ in range(2**10)]
    return b"".join([*parts, z.flush()])


@pytest.mark.parametrize(
    "images, message",
    [
        (_idx([10, 0, 0], b""), "dims [10, 0, 0]: an image side must be 1 to 4096 pixels"),
        (_idx([0, 28, 28], b""), "holds no items"),
        (_idx([2**32 - 1, 4096, 4096], bytes(100)), "bytes after the header, its dims [4294967295, 4096, 4096] need "
         "72057594021150720"),
        ("bomb", "refused as a decompression bomb"),
        (gzip.compress(_idx([10, 28, 28], bytes(28 * 28 * 10 + 5))), "more bytes after the header than its dims need"),
    ],
)  # fmt: skip
def test_idx_dims_are_checked_before_anything_is_allocated_or_inflated(images, message, tmp_path):
    """Empty images, dims whose product overflows int64, a 1 GB .gz bomb, trailing bytes: one line, exit 2."""
    import tracemalloc

    inp = tmp_path / "raw"
    inp.mkdir()
    images = _gz_bomb() if images == "bomb" else images
    gz = images[:2] == b"\x1f\x8b"
    (inp / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))).write_bytes(images)
    (inp / "t10k-labels-idx1-ubyte").write_bytes(_idx([10], bytes(10), magic=2049))
    r = run("mnist", inp, tmp_path / "out", "--splits", "test", check=False)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    from pipelines.mnist import IdxError, read_idx

    tracemalloc.start()  # what the reader allocates (zlib's output included): never the gigabyte of the bomb
    try:
        with pytest.raises(IdxError):
            read_idx(str(next(inp.glob("t10k-images*"))), 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak


def test_a_label_outside_the_classes_is_a_one_line_error(tmp_path):
    inp = tmp_path / "raw"
    inp.mkdir()
    (inp / "t10k-images-idx3-ubyte").write_bytes(_idx([3, 2, 2], bytes(12)))
    (inp / "t10k-labels-idx1-ubyte").write_bytes(_idx([3], bytes([1, 200, 2]), magic=2049))
    r = run("mnist", inp, tmp_path / "out", "--splits", "test", check=False)
    assert r.returncode == 2 and "t10k-labels-idx1-ubyte: label 200 at item 1 is not a class of mnist" in r.stderr


def test_cifar10_fakes_in_both_published_layouts_equal_their_arrays(tmp_path):
    import pickle

    for layout in ("tfds-py", "tfds-bin"):
        run("cifar10", DATA / "cifar10" / layout, tmp_path / layout)
        for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
            want_images, want_labels = [], []
            for name in names:
                if layout == "tfds-py":
                    d = pickle.loads(
                        (DATA / "cifar10/tfds-py/cifar-10-batches-py" / name).read_bytes(), encoding="bytes"
                    )
                    want_images.append(d[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                    want_labels += [int(x) for x in d[b"labels"]]
                else:
                    rows = np.frombuffer((DATA / "cifar10/tfds-bin/cifar-10-batches-bin" / f"{name}.bin").read_bytes(),
                                         np.uint8).reshape(-1, 3073)  # fmt: skip
                    want_images.append(rows[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                    want_labels += rows[:, 0].tolist()
            images = np.concatenate(want_images)
            got = read_samples(tmp_path / layout / split)
            assert len(got) == len(images)
            for i in range(len(images)):
                s = got[f"{split}_{i:05d}"]
                assert np.array_equal(np.load(io.BytesIO(s["npy"])), images[i])
                assert int(s["cls"]) == want_labels[i]
            if layout == "tfds-py" and split == "train":  # and through the eval loader
                from loaders import cifar10_dali
                from loaders.cifar10 import CIFAR_MEAN, CIFAR_STD

                loader = cifar10_dali(str(tmp_path / layout / split), batch_size=2, train=False, device="cpu",
                                      return_keys=True, drop_last=False)  # fmt: skip
                for batch in loader:
                    pixels = batch["image"].numpy().transpose(0, 2, 3, 1) * np.array(CIFAR_STD) * 255
                    pixels = np.rint(pixels + np.array(CIFAR_MEAN) * 255)
                    index = [int(k.split("_")[1]) for k in batch["key"]]
                    assert np.array_equal(pixels, images[index]) and batch["label"].tolist() == [
                        want_labels[i] for i in index
                    ]


def test_cifar10_loader_augments_like_randomcrop_pad4_and_flip(tmp_path):
    pytest.importorskip("nvidia.dali")
    from loaders import cifar10_dali
    from loaders.cifar10 import CIFAR_MEAN, CIFAR_STD

    raw_cifar.write_tar_gz(tmp_path / "raw")
    run("cifar10", tmp_path / "raw", tmp_path / "out", "--format", "png")  # the decoding graph (npy: conformance)
    batches = raw_cifar.batches()
    images = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    mean, std = np.array(CIFAR_MEAN) * 255, np.array(CIFAR_STD) * 255
    shifts, flips = set(), 0
    loader = cifar10_dali(str(tmp_path / "out" / "train"), batch_size=6, device="cpu", return_keys=True, seed=1)
    for _ in range(3):
        for batch in loader:
            out = np.rint(batch["image"].numpy().transpose(0, 2, 3, 1) * std + mean)
            for key, img in zip(batch["key"], out, strict=True):
                src = images[int(key.split("_")[1])].astype(np.float64)
                found = None
                for flip in (False, True):
                    for dy in range(-4, 5):
                        for dx in range(-4, 5):
                            want = np.zeros((32, 32, 3))
                            ys, xs = slice(max(0, -dy), min(32, 32 - dy)), slice(max(0, -dx), min(32, 32 - dx))
                            want[ys, xs] = src[max(0, dy) : 32 + min(0, dy), max(0, dx) : 32 + min(0, dx)]
                            if np.abs((want[:, ::-1] if flip else want) - img).max() <= 1:
                                found = (flip, dy, dx)
                assert found is not None, key  # a shifted (zero-padded) and maybe mirrored copy of its image
                flips += found[0]
                shifts.add(found[1:])
    assert flips > 5 and len(shifts) > 10


def test_cifar10_batches_of_the_wrong_shape_are_one_line_errors(tmp_path):
    inp = tmp_path / "raw" / "cifar-10-batches-py"
    inp.mkdir(parents=True)
    shutil.copytree(DATA / "cifar10" / "tfds-py" / "cifar-10-batches-py", inp, dirs_exist_ok=True)
    shutil.copy(DATA / "cifar10" / "datumaro" / "test_batch", inp / "test_batch")
    r = run("cifar10", tmp_path / "raw", tmp_path / "out", check=False)
    assert (
        r.returncode == 2 and "test_batch: data is object [4] with 4 labels; CIFAR-10 batches hold N x 3072" in r.stderr
    )
    evil = inp / "data_batch_1"
    evil.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")  # a pickle that runs a command
    r = run("cifar10", tmp_path / "raw", tmp_path / "out", "--splits", "train", check=False)
    assert r.returncode == 2 and "refuses to build os.system" in r.stderr and "pwned" not in r.stdout


@pytest.mark.parametrize("codec, nested", [("hex_codec", 1), ("base64", 1), ("latin1", 2)])
def test_a_cifar_pickle_that_grows_through_codecs_is_refused(codec, nested, tmp_path):
    """`_codecs.encode` nested (each level of hex or base64 doubles the bytes: 30 levels of a 785-byte pickle made
    533 MB) builds nothing but a string's own bytes: anything else is a one-line error."""
    inp = tmp_path / "raw" / "cifar-10-batches-py"
    inp.mkdir(parents=True)
    shutil.copytree(DATA / "cifar10" / "tfds-py" / "cifar-10-batches-py", inp, dirs_exist_ok=True)
    core = b"Vaa\n" if nested == 2 else b"C\x02aa"
    bomb = b"\x80\x02}(Vdata\n" + b"c_codecs\nencode\n(" * nested + core
    bomb += f"V{codec}\ntR".encode() * nested + b"u."
    (inp / "data_batch_1").write_bytes(bomb)
    r = run("cifar10", tmp_path / "raw", tmp_path / "out", "--splits", "train", check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "data_batch_1: not a CIFAR-10 python batch" in r.stderr and "refuses _codecs.encode" in r.stderr


def test_a_truncated_cifar_archive_is_a_one_line_error_naming_it(tmp_path):
    archive = raw_cifar.write_tar_gz(tmp_path / "raw")
    archive = archive if archive.is_file() else next((tmp_path / "raw").glob("*.tar.gz"))
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    r = run("cifar10", tmp_path / "raw", tmp_path / "out", check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"{archive}: the archive ends early or is damaged" in r.stderr
