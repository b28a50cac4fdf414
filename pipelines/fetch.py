"""`python -m pipelines fetch NAME --to DIR`: download a dataset as its publisher serves it, into the layout its
conversion job reads, resuming interrupted files and checking the publisher's checksums where it publishes them.

    python -m pipelines fetch mnist --to raw/mnist && python -m pipelines mnist --input raw/mnist --output out

A file is downloaded to `<name>.part` and renamed when complete; a run that was interrupted asks for the rest
(an HTTP Range request) instead of starting again. A finished file is checked against the publisher's md5 or sha1
(MNIST and CIFAR-10 as torchvision records them, FMA's sha1s from its README, YouTube-8M's per-file md5s from its
download plans); where the publisher gives none (COCO, Open Images), its size is checked against the server's
and its sha256 recorded in `<DIR>/SHA256SUMS`, so that a later copy can be checked. `--base-url` serves every
file from another host with the same paths (a mirror; the tests' loopback server). ImageNet needs an account:
`fetch imagenet` says where to register and which files to place where.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["CATALOGUE", "FetchError", "Remote", "fetch", "main", "where_to_get"]


class FetchError(RuntimeError):
    """A download that cannot complete: one line naming the URL (or file) and why."""


@dataclasses.dataclass(frozen=True)
class Remote:
    url: str
    name: str  # the path under --to
    digest: str | None = None  # "md5:..." or "sha1:..." as the publisher gives it


@dataclasses.dataclass(frozen=True)
class Dataset:
    page: str
    layout: str  # what `--to` holds afterwards, as the job reads it
    parts: dict[str, list[Remote]]  # part name -> files
    default: tuple[str, ...]
    note: str = ""


def _files(base: str, names: dict[str, str | None], folder: str = "") -> list[Remote]:
    return [Remote(base + n, f"{folder}{n.rsplit('/', 1)[-1]}", d) for n, d in names.items()]


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # torchvision's mirror of yann.lecun.com's files
_COCO = "http://images.cocodataset.org/"
_FMA = "https://os.unil.cloud.switch.ch/fma/"
_OI = "https://storage.googleapis.com/openimages/2018_04/"
_OI_TARS = "https://open-images-dataset.s3.amazonaws.com/tar/"
_YT8M_VOCABULARY = "https://research.google.com/youtube8m/csv/2/vocabulary.csv"

CATALOGUE: dict[str, Dataset] = {
    "mnist": Dataset(
        "http://yann.lecun.com/exdb/mnist/",
        "the four IDX files (.gz) in DIR",
        {
            "train": _files(
                _MNIST,
                {
                    "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
                    "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
                },
            ),
            "test": _files(
                _MNIST,
                {
                    "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
                    "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
                },
            ),
        },
        ("train", "test"),
    ),
    "cifar10": Dataset(
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        "cifar-10-python.tar.gz in DIR (read in place)",
        {
            "python": _files(
                "https://www.cs.toronto.edu/~kriz/", {"cifar-10-python.tar.gz": "md5:c58f30108f718f92721af3b95e74349a"}
            )
        },
        ("python",),
    ),
    "coco": Dataset(
        "https://cocodataset.org/#download",
        "train2017.zip, val2017.zip, test2017.zip, annotations_trainval2017.zip, image_info_test2017.zip in DIR "
        "(read in place)",
        {
            "train": _files(_COCO + "zips/", {"train2017.zip": None}),
            "val": _files(_COCO + "zips/", {"val2017.zip": None}),
            "test": _files(_COCO + "zips/", {"test2017.zip": None}),
            "annotations": _files(
                _COCO + "annotations/", {"annotations_trainval2017.zip": None, "image_info_test2017.zip": None}
            ),
        },
        ("annotations", "val", "train"),
        "COCO publishes no checksums: sizes are checked and sha256s recorded",
    ),
    "fma": Dataset(
        "https://github.com/mdeff/fma",
        "fma_metadata.zip and fma_<subset>.zip in DIR (read in place)",
        {
            part: _files(_FMA, {f"fma_{part}.zip": digest})
            for part, digest in (
                ("metadata", "sha1:f0df49ffe5f2a6008d7dc83c6915b31835dfe733"),
                ("small", "sha1:ade154f733639d52e35e32f5593efe5be76c6d70"),
                ("medium", "sha1:c67b69ea232021025fca9231fc1c7c1a063ab50b"),
                ("large", "sha1:497109f4dd721066b5ce5e5f250ec604dc78939e"),
                ("full", "sha1:0f0ace23fbe9ba30ecb7e95f763e435ea802b8ab"),
            )
        },
        ("metadata", "small"),
    ),
    "openimages": Dataset(
        "https://storage.googleapis.com/openimages/web/download.html",
        "the CSVs and the CVDF tars (train_0..f.tar.gz, validation.tar.gz, test.tar.gz) in DIR",
        {
            "csv": _files(
                _OI,
                {
                    f"{s}/{s}-annotations-{k}.csv": None
                    for s in ("train", "validation", "test")
                    for k in ("bbox", "human-imagelabels")
                }
                | {"class-descriptions-boxable.csv": None},
            ),
            **{f"train_{c}": _files(_OI_TARS, {f"train_{c}.tar.gz": None}) for c in "0123456789abcdef"},
            "validation": _files(_OI_TARS, {"validation.tar.gz": None}),
            "test": _files(_OI_TARS, {"test.tar.gz": None}),
        },
        ("csv", "validation"),
        "Open Images publishes no checksums: sizes are checked and sha256s recorded; parts train_0 ... train_f are "
        "~30-50 GB each",
    ),
    "youtube8m": Dataset(
        "https://research.google.com/youtube8m/download.html",
        "DIR/<level>/<split>NNNN.tfrecord and DIR/vocabulary.csv",
        {"vocabulary": [Remote(_YT8M_VOCABULARY, "vocabulary.csv")]},
        ("vocabulary", "2/video/validate"),
        "parts are YouTube-8M partitions (2/video/train, 2/video/validate, 2/video/test, 2/frame/...), listed with "
        "per-file md5s by the publisher's download plans; --mirror us|eu|asia",
    ),
    "imagenet": Dataset(
        "https://image-net.org/download-images.php",
        "ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz in DIR (read in place)",
        {},
        (),
        "ImageNet is downloaded with an account: register at image-net.org, accept the terms, and download the "
        "ILSVRC2012 files above into DIR",
    ),
}


def where_to_get(name: str) -> str:
    """The lines a job's --help ends with: where the data is published, what to download, how."""
    d = CATALOGUE[name]
    how = f"python -m pipelines fetch {name} --to DIR" if d.parts else d.note
    return f"getting the data: {d.page}\n  {how}\n  then --input DIR holds {d.layout}"


def _digest_of(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _rebased(url: str, base: str | None) -> str:
    if not base:
        return url
    return base.rstrip("/") + urllib.parse.urlsplit(url).path


def _download(url: str, dest: str, timeout: float) -> None:
    """`url` into `dest`, resuming `dest.part`; the size is checked against the server's."""
    part = dest + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            if have and r.status != 206:  # the server ignored the range: start again
                have = 0
            total = (
                r.headers.get("Content-Range", "").rsplit("/", 1)[-1]
                if r.status == 206
                else r.headers.get("Content-Length")
            )
            with open(part, "ab" if have else "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # asked past the end: the part is whole
            os.replace(part, dest)
            return
        raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise FetchError(
            f"{url}: {getattr(e, 'reason', e)}; run again to resume from {os.path.getsize(part) if os.path.exists(part) else 0} bytes"
        ) from None
    got = os.path.getsize(part)
    if total and total.isdigit() and got != int(total):
        raise FetchError(f"{url}: the connection ended after {got} of {total} bytes; run again to resume")
    os.replace(part, dest)


def _one(remote: Remote, to: str, base: str | None, timeout: float, say) -> None:
    dest = os.path.join(to, remote.name)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    algorithm, _, want = (remote.digest or "sha256:").partition(":")
    if os.path.exists(dest) and (not want or _digest_of(dest, algorithm) == want):
        say(f"have {remote.name}")
        return
    url = _rebased(remote.url, base)
    say(f"fetching {url} -> {dest}")
    _download(url, dest, timeout)
    got = _digest_of(dest, algorithm)
    if want and got != want:
        os.replace(dest, dest + ".bad")
        raise FetchError(f"{dest}: {algorithm} {got} is not the publisher's {want}; kept as {dest}.bad, run again")
    if not want:
        with open(os.path.join(to, "SHA256SUMS"), "a") as f:
            f.write(f"{got}  {remote.name}\n")


def _yt8m_files(partition: str, to: str, base: str | None, mirror: str, timeout: float) -> list[Remote]:
    """A YouTube-8M partition's files from the publisher's download plan ({file: md5}), named as its own
    download.py names them (`train` + the index of the two-letter id: `train0042.tfrecord`)."""
    version, level, split = partition.split("/")
    plan_url = _rebased(f"http://data.yt8m.org/{version}/download_plans/{level}_{split}.json", base)
    try:
        with urllib.request.urlopen(plan_url, timeout=timeout) as r:
            plan = json.loads(r.read())["files"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
        raise FetchError(f"{plan_url}: no download plan ({getattr(e, 'reason', e)})") from None
    letters = [chr(c) for c in [*range(97, 123), *range(65, 91), *range(48, 58)]]
    index = {a + b: i for i, (a, b) in enumerate((a, b) for a in letters for b in letters)}
    out = []
    for name, md5 in sorted(plan.items()):
        stem, ext = name.rsplit(".", 1)
        local = f"{level}/{stem[:-2]}{index.get(stem[-2:], 0):04d}.{ext}"
        out.append(Remote(f"http://{mirror}.data.yt8m.org/{partition}/{name}", local, f"md5:{md5}"))
    return out


def fetch(
    name: str,
    to: str,
    *,
    parts: list[str] | None = None,
    base_url: str | None = None,
    mirror: str = "us",
    timeout: float = 60.0,
    say=print,
) -> list[str]:
    """Download the parts of a dataset into `to`; returns the files there. FetchError on the first failure."""
    d = CATALOGUE[name]
    files: list[Remote] = []
    for part in parts or d.default:
        if name == "youtube8m" and part.count("/") == 2:
            files += _yt8m_files(part, to, base_url, mirror, timeout)
        elif part in d.parts:
            files += d.parts[part]
        else:
            raise FetchError(
                f"{name} has no part {part!r}; parts: {', '.join(d.parts) or 'none'}"
                + (", or a partition like 2/video/train" if name == "youtube8m" else "")
            )
    os.makedirs(to, exist_ok=True)
    for remote in files:
        _one(remote, to, base_url, timeout, say)
    return [r.name for r in files]


def main(argv: list[str] | None = None) -> int:
    from shards.cli import OneLineParser

    p = OneLineParser(prog="python -m pipelines fetch", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("name", choices=sorted(CATALOGUE))
    p.add_argument("--to", required=True, help="folder to download into (then the job's --input)")
    p.add_argument("--parts", help="comma-separated parts (see --list; default: the dataset's smallest useful set)")
    p.add_argument("--list", action="store_true", help="say what would be fetched, and from where, and stop")
    p.add_argument("--base-url", help="fetch the same paths from this host instead (a mirror)")
    p.add_argument("--mirror", choices=["us", "eu", "asia"], default="us", help="YouTube-8M's mirror (default us)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    d = CATALOGUE[args.name]
    if args.list or not d.parts:
        print(f"{args.name}: {d.page}\n  layout under --to: {d.layout}")
        if d.note:
            print(f"  {d.note}")
        for part, remotes in d.parts.items():
            print(
                f"  part {part}{' (default)' if part in d.default else ''}: "
                + ", ".join(f"{r.url}" + (f" [{r.digest}]" if r.digest else "") for r in remotes)
            )
        if not d.parts:
            return 2
        return 0
    parts = [x for x in args.parts.split(",") if x] if args.parts else None
    try:
        got = fetch(args.name, args.to, parts=parts, base_url=args.base_url, mirror=args.mirror)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.name}: {len(got)} files in {args.to}; convert with: python -m pipelines {args.name} --input "
        f"{args.to} --output OUT"
    )
    return 0
