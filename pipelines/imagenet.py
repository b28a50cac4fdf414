"""ImageNet (ILSVRC2012) -> shuffled WebDataset shards, from the original archives, Kaggle's layout or folders.

Label id = index of the wnid in the 1000 wnids sorted (what torchvision and TFDS use); the manifest's `classes`
is that list. Each sample holds `jpg` (baseline RGB JPEG), `cls` (the label id) and `json` (wnid, original file
name, original width and height, what was fixed). Archives are read in place by member offsets, never extracted.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import json
import tarfile
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any, NamedTuple

from pipelines.common import errors
from pipelines.common.downloads import Dataset
from pipelines.common.errors import BadInput
from pipelines.common.images import prepare_image
from pipelines.common.job import DatasetJob, Found, Run, register
from pipelines.common.plan import SplitPlan
from pipelines.common.records import Pointer
from shards import storage
from shards.keys import split_member_name, validate_key
from shards.tario import iter_members

__all__ = ["ImageNet", "ImageNetConfig", "WNIDS", "detect_layout", "expand_unit", "encode_sample", "main"]

WNIDS: list[str] = resources.files("pipelines").joinpath("data/imagenet2012_labels.txt").read_text().split()
LABELS = {w: i for i, w in enumerate(WNIDS)}
SPLIT_DIRS = {"train": "train", "validation": "val"}
FIELDS = {
    "jpg": "image/jpeg: baseline RGB JPEG (fixed where the original was CMYK, grayscale, PNG or progressive)",
    "cls": "label id, ASCII decimal: index of the wnid in `classes`",
    "json": "{wnid, name, width, height, fixes}: original file name and size, fixes applied",
}
TRAIN_TAR, VAL_TAR, DEVKIT = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"
KAGGLE = "ILSVRC/Data/CLS-LOC"


class LayoutError(errors.LayoutError):
    """The input is not a layout this job knows, or a layout with a piece missing."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageNetConfig:
    resize_max_side: int | None = None
    jpeg_quality: int = 95
    verify_decode: bool = False
    val_labels: str | None = None  # one wnid per line, in sorted validation file-name order (TFDS's file)

    def params(self) -> dict[str, Any]:
        return {
            "resize_max_side": self.resize_max_side,
            "jpeg_quality": self.jpeg_quality,
            "verify_decode": self.verify_decode,
        }


class Unit(NamedTuple):
    """A piece of listing work: a tar (or a tar inside a tar) or a folder, and how its files get labels.

    `wnid` labels every file of the unit; otherwise `labels` maps the key (dict) or the position in sorted
    file-name order (list) to a wnid.
    """

    kind: str  # "tar" | "dir"
    url: str
    offset: int = 0
    size: int | None = None
    wnid: str | None = None
    labels: Any = None


@dataclasses.dataclass
class Layout:
    name: str
    units: dict[str, list[Unit]]


# ---------------------------------------------------------------- labels


def _read_val_labels(url: str) -> list[str]:
    return storage.read_bytes(url).decode().split()


def _devkit_val_labels(url: str) -> list[str]:
    """The wnid of each validation image, in file-name order, from the devkit's meta.mat and ground truth.

    The devkit numbers classes by ILSVRC2012_ID, which is not the sorted-wnid order; meta.mat maps one to the
    other.
    """
    from scipy.io import loadmat

    with tarfile.open(fileobj=io.BytesIO(storage.read_bytes(url)), mode="r:gz") as tf:
        names = {m.name.rsplit("/", 1)[-1]: m for m in tf.getmembers() if m.isfile()}
        missing = [n for n in ("meta.mat", "ILSVRC2012_validation_ground_truth.txt") if n not in names]
        if missing:
            raise LayoutError(f"{url} lacks {missing}")
        meta = loadmat(io.BytesIO(tf.extractfile(names["meta.mat"]).read()), squeeze_me=True)
        truth = tf.extractfile(names["ILSVRC2012_validation_ground_truth.txt"]).read().decode().split()
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in meta["synsets"]}
    return [id_to_wnid.get(int(i), f"unknown-ILSVRC2012_ID-{i}") for i in truth]


def _kaggle_val_labels(url: str) -> dict[str, str]:
    """LOC_val_solution.csv: `ImageId,PredictionString` where the string starts with the wnid."""
    out = {}
    for line in storage.read_bytes(url).decode().splitlines()[1:]:
        image_id, _, prediction = line.partition(",")
        if prediction.split():
            out[image_id.strip()] = prediction.split()[0]
    return out


# ---------------------------------------------------------------- layouts


def _val_labels(cfg: ImageNetConfig, devkit: str | None, what: str) -> list[str]:
    if cfg.val_labels:
        return _read_val_labels(cfg.val_labels)
    if devkit:
        return _devkit_val_labels(devkit)
    raise LayoutError(
        f"validation images found ({what}) but no labels: put {DEVKIT} next to them or pass --val-labels FILE "
        "(one wnid per line in sorted file-name order, e.g. TFDS's imagenet2012_validation_labels.txt)"
    )


def _archive_layout(root: str, names: set[str], cfg: ImageNetConfig, splits: tuple[str, ...]) -> Layout:
    units: dict[str, list[Unit]] = {}
    if TRAIN_TAR in names and "train" in splits:
        url = storage.join(root, TRAIN_TAR)
        with storage.open_read(url) as f:
            units["train"] = [
                Unit("tar", url, m.offset, m.size, wnid=split_member_name(m.name.rsplit("/", 1)[-1])[0])
                for m in iter_members(f, url=url)
            ]
    if VAL_TAR in names and "validation" in splits:
        devkit = storage.join(root, DEVKIT) if DEVKIT in names else None
        url = storage.join(root, VAL_TAR)
        units["validation"] = [Unit("tar", url, 0, None, labels=_val_labels(cfg, devkit, VAL_TAR))]
    return Layout("archives", units)


def _kaggle_layout(root: str, cfg: ImageNetConfig, splits: tuple[str, ...]) -> Layout:
    base = storage.join(root, KAGGLE)
    names = set(storage.listdir(base))
    units: dict[str, list[Unit]] = {}
    if "train" in names and "train" in splits:
        train = storage.join(base, "train")
        units["train"] = [Unit("dir", storage.join(train, d), wnid=d) for d, size in storage.list_files(train)]
    if "val" in names and "validation" in splits:
        solution = storage.join(root, "LOC_val_solution.csv")
        if cfg.val_labels:
            labels: Any = _read_val_labels(cfg.val_labels)
        elif storage.exists(solution):
            labels = _kaggle_val_labels(solution)
        else:
            raise LayoutError(f"{base}/val found but no labels: LOC_val_solution.csv is missing from {root}")
        units["validation"] = [Unit("dir", storage.join(base, "val"), labels=labels)]
    return Layout("kaggle", units)


def _folder_layout(root: str, names: set[str], cfg: ImageNetConfig, splits: tuple[str, ...]) -> Layout:
    units: dict[str, list[Unit]] = {}
    for split, folder in SPLIT_DIRS.items():
        if folder not in names or split not in splits:
            continue
        url = storage.join(root, folder)
        entries = storage.list_files(url)
        dirs = [n for n, size in entries if size is None]
        files = [n for n, size in entries if size is not None]
        units[split] = [Unit("dir", storage.join(url, d), wnid=d) for d in dirs]
        if files:  # a flat folder of images (ImageNet's val as extracted): labels by sorted file-name order
            units[split].append(Unit("dir", url, labels=_val_labels(cfg, None, f"{len(files)} files in {url}")))
    return Layout("folders", units)


def detect_layout(
    root: str, cfg: ImageNetConfig, splits: tuple[str, ...] = ("train", "validation"), *, required: bool = True
) -> Layout:
    """Tell the layout from what is under `root` and list the work units of each requested split found."""
    names = set(storage.listdir(root))
    if TRAIN_TAR in names or VAL_TAR in names:
        layout = _archive_layout(root, names, cfg, splits)
    elif storage.exists(storage.join(root, KAGGLE)):
        layout = _kaggle_layout(root, cfg, splits)
    elif names & set(SPLIT_DIRS.values()):
        layout = _folder_layout(root, names, cfg, splits)
    else:
        layout = None
    if layout is not None:
        missing = [s for s in splits if s not in layout.units]
        if missing and (required or len(missing) == len(splits)):
            raise LayoutError(
                f"{root} ({layout.name} layout) has no {missing}; found {sorted(layout.units) or 'nothing'}"
            )
        return layout
    shown = ", ".join(sorted(names)[:10]) or "nothing"
    raise LayoutError(
        f"{root}: not an ImageNet layout I know. Expected {TRAIN_TAR} / {VAL_TAR} (+ {DEVKIT}), Kaggle's "
        f"{KAGGLE}/{{train,val}} with LOC_val_solution.csv, or folders train/<wnid>/ and val/; found {shown}"
    )


# ---------------------------------------------------------------- listing (in Beam workers)


def _pointer(unit: Unit, name: str, url: str, offset: int, size: int, position: int) -> Pointer:
    stem = split_member_name(name.rsplit("/", 1)[-1])[0]
    meta: dict[str, Any] = {"name": name.rsplit("/", 1)[-1]}
    if unit.wnid is not None:
        meta["wnid"] = unit.wnid
    elif isinstance(unit.labels, dict):
        meta["wnid"] = unit.labels.get(stem)
    elif position < len(unit.labels):
        meta["wnid"] = unit.labels[position]
    try:
        validate_key(stem, url=unit.url)
    except ValueError as e:
        meta.update(error=str(e), stage="list")
        stem = stem.replace(".", "_").replace("/", "_").replace(" ", "_") or "empty-name"
    return Pointer(stem, url, offset, size, meta)


def expand_unit(unit: Unit) -> Iterator[Pointer]:
    """The pointers of one unit: every image, with where its bytes are and what is known about it."""
    if unit.kind == "tar":
        try:
            with storage.open_read(unit.url, block_size=1 << 16) as f:
                f.seek(unit.offset)
                end = unit.offset + unit.size if unit.size is not None else None
                members = list(iter_members(f, url=unit.url, end=end))
        except ValueError as e:  # a damaged archive: its images cannot be listed, say so once
            where = f"{unit.url}@{unit.offset}"
            yield Pointer(
                f"unlistable-{unit.wnid or 'tar'}",
                unit.url,
                unit.offset,
                0,
                {"error": str(e), "stage": "list", "name": where},
            )
            return
        members.sort(key=lambda m: m.name)
        for i, m in enumerate(members):
            yield _pointer(unit, m.name, unit.url, m.offset, m.size, i)
    else:
        files = [(n, s) for n, s in storage.list_files(unit.url) if s is not None]
        for i, (name, size) in enumerate(files):
            yield _pointer(unit, name, storage.join(unit.url, name), 0, size, i)


def encode_sample(p: Pointer, data: bytes, *, cfg: ImageNetConfig) -> dict[str, bytes]:
    """The stored sample for one image; BadInput (the quarantine reason) when it has no label or won't decode."""
    wnid = p.meta.get("wnid")
    if wnid not in LABELS:
        raise BadInput(f"no label: wnid {wnid!r} of {p.meta.get('name')} is not one of the 1000 classes", stage="label")
    img = prepare_image(
        data, resize_max_side=cfg.resize_max_side, quality=cfg.jpeg_quality, verify_decode=cfg.verify_decode
    )
    info = {
        "wnid": wnid,
        "name": p.meta.get("name"),
        "width": img.original_width,
        "height": img.original_height,
        "fixes": list(img.fixes),
    }
    return {"jpg": img.data, "cls": b"%d" % LABELS[wnid], "json": json.dumps(info, sort_keys=True).encode()}


# ---------------------------------------------------------------- watching (--watch)


@dataclasses.dataclass(frozen=True)
class WatchedFolders:
    """The raw files of the folder and Kaggle layouts as they grow: images in class folders (label = folder), and
    Kaggle's flat val/ labelled by LOC_val_solution.csv, read again for every increment (so new val files come
    with their rows; a file whose row is not there yet is quarantined for having no label, as the batch job does)."""

    root: str
    layout: str  # "folders" | "kaggle"

    def _base(self, split: str) -> str:
        folder = SPLIT_DIRS[split]
        return storage.join(self.root, KAGGLE, folder) if self.layout == "kaggle" else storage.join(self.root, folder)

    def inputs(self, split: str) -> dict[str, tuple[int, str]]:
        return storage.stat_files(self._base(split))

    def pointers(self, split: str, files: dict[str, int]) -> list[Pointer]:
        base = self._base(split).rstrip("/")
        labels = None
        if self.layout == "kaggle" and split == "validation":
            solution = storage.join(self.root, "LOC_val_solution.csv")
            labels = _kaggle_val_labels(solution) if storage.exists(solution) else {}
        out = []
        for url, size in sorted(files.items()):
            parent, name = url.rsplit("/", 1)
            wnid = parent.rsplit("/", 1)[-1] if parent.rstrip("/") != base else None
            # a flat file of the folder layout has no label (the batch job's --val-labels count positions,
            # which change as files arrive): quarantined for it, as the batch job would
            unit = Unit("dir", parent, wnid=wnid, labels=labels if labels is not None else [])
            out.append(_pointer(unit, name, url, 0, size, 0))
        return out


# ---------------------------------------------------------------- the job


LAYOUTS_HELP = """\
  archives  ILSVRC2012_img_train.tar (a tar of 1000 class tars), ILSVRC2012_img_val.tar,
            ILSVRC2012_devkit_t12.tar.gz (val labels), read in place
  kaggle    ILSVRC/Data/CLS-LOC/{train/<wnid>/,val/}, LOC_synset_mapping.txt, LOC_val_solution.csv
  folders   train/<wnid>/*.JPEG, val/<wnid>/*.JPEG (or a flat val/ with --val-labels)"""


DOWNLOAD = Dataset(
    "https://image-net.org/download-images.php",
    "ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz in DIR (read in place)",
    {},
    (),
    "ImageNet is downloaded with an account: register at image-net.org, accept the terms, and download the "
    "ILSVRC2012 files above into DIR",
)


@register
class ImageNet(DatasetJob):
    name = "imagenet"
    download = DOWNLOAD
    summary = __doc__.split("\n")[0]
    default_splits = "train,validation"
    layouts = LAYOUTS_HELP
    watch = True

    def add_options(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--resize-max-side", type=int, help="shrink images whose longer side is larger (re-encodes)")
        p.add_argument("--jpeg-quality", type=int, default=95, help="quality of re-encoded JPEGs (default 95)")
        p.add_argument("--val-labels", help="validation labels: one wnid per line, sorted file-name order")
        p.add_argument("--verify-decode", action="store_true", help="fully decode every image (slow) to catch damage")

    @staticmethod
    def config(run: Run) -> ImageNetConfig:
        a = run.args
        return ImageNetConfig(
            resize_max_side=a.resize_max_side,
            jpeg_quality=a.jpeg_quality,
            verify_decode=a.verify_decode,
            val_labels=a.val_labels,
        )

    def detect(self, run: Run) -> Found:
        layout = detect_layout(run.job.input, self.config(run), run.job.splits, required=run.job.splits_given)
        return Found(layout, splits=layout.units)

    def watched(self, run: Run) -> WatchedFolders:
        if run.layout.name not in ("folders", "kaggle"):
            raise LayoutError(
                f"{run.job.input}: the {run.layout.name} layout cannot be watched (each split is one "
                "archive, replaced rather than added to); watch the folder or Kaggle layout"
            )
        return WatchedFolders(run.job.input, run.layout.name)

    def plan(self, run: Run, split: str) -> SplitPlan:
        return self.split_plan(
            run,
            split,
            layout=run.layout.name,
            fields=FIELDS,
            classes=WNIDS,
            params=self.config(run).params(),
        )

    def encoder(self, run: Run, split: str) -> Callable:
        return functools.partial(encode_sample, cfg=self.config(run))

    def units(self, run: Run, split: str | None) -> list[Unit]:
        return run.layout.units[split]

    def lister(self, run: Run) -> Callable[[Unit], Iterator[Pointer]]:
        return expand_unit


main = ImageNet().main
