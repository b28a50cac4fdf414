"""`python -m pipelines openimages`: Open Images (V4-V7, Challenge 2019) -> detection and multi-label shards.

Inputs as distributed: images in CVDF tars (`train_0.tar.gz` ..., or uncompressed `*.tar`), Challenge-2019 zips
(`train_00.zip` ...), or per-image files in folders; the CSVs: boxes (13 columns, 21 with the XClick columns, or
the 7-column Challenge validation layout), human and machine image-level labels (4 columns, or 3 without
`Source`; TFDS's misspelled `Condidence` header is read as `Confidence`), image metadata with `Rotation`,
class descriptions (with or without a header row). The version is detected from the file names.

Annotations are grouped by ImageID in Beam and joined to pointers at the images; the shard writer ranged-reads
each image (a zip member is inflated, a `.tar.gz` is first staged as a plain tar under `<output>/_staging/`,
because gzip cannot be read at an offset). Each sample: `jpg`; `json` (everything known about the image);
`boxes` (float32 N x 4, normalized [xmin, ymin, xmax, ymax], the `ltrb` order DALI's bbox operators take);
`labels` (int32 N, index into `classes`); `imagelabels` (int32, human-verified positive labels). `Rotation` is
applied to pixels and boxes alike. A Parquet table of every box and image-level label goes next to the shards
(`<split>/annotations/shard-NNNNNN.parquet`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import io
import json
import logging
import posixpath
import re
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from importlib import resources
from typing import Any, NamedTuple

import numpy as np

from pipelines.common.images import BadInput, prepare_image
from pipelines.common.options import base_parser, beam_pipeline_options, job_options, split_argv, use_storage_options
from pipelines.common.records import Pointer
from shards import storage
from shards.keys import validate_key

__all__ = [
    "FIELDS",
    "LayoutError",
    "OpenImagesConfig",
    "detect_layout",
    "encode_sample",
    "main",
    "parse_csv",
    "reason_counts",
    "rotate_boxes",
    "side_table",
]

SPLITS = ("train", "validation", "test")
VERSIONS = ("v4", "v5", "v6", "v7", "challenge2019")
FIELDS = {
    "jpg": "image/jpeg: baseline RGB JPEG, rotated upright where the metadata says so",
    "json": "{id, split, boxes: [{mid, label, xmin, xmax, ymin, ymax, flags, source, confidence}], imagelabels, "
    "machinelabels, rotation, url, license, author, title, width, height, fixes}",
    "boxes": "float32 N x 4, little-endian: normalized [xmin, ymin, xmax, ymax] of the boxes whose class is in `classes`",
    "labels": "int32 N, little-endian: index in `classes` of each box",
    "imagelabels": "int32, little-endian: indexes in `classes` of the human-verified positive image-level labels",
}
IMAGE_EXT = (".jpg", ".jpeg", ".png")
FLAGS = ("IsOccluded", "IsTruncated", "IsGroupOf", "IsDepiction", "IsInside")
# the columns each CSV kind needs (others are kept in `json` where useful, or ignored)
BOX_REQUIRED = ("ImageID", "LabelName", "XMin", "XMax", "YMin", "YMax")
LABEL_REQUIRED = ("ImageID", "LabelName", "Confidence")
META_COLUMNS = ("ImageID", "Subset", "OriginalURL", "OriginalLandingURL", "License", "AuthorProfileURL", "Author")
META_COLUMNS += ("Title", "OriginalSize", "OriginalMD5", "Thumbnail300KURL", "Rotation")
HEADER_FIXES = {"Condidence": "Confidence"}  # TFDS's V4 label files


class LayoutError(ValueError):
    """The input is not an Open Images layout this job knows, or a piece is missing."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class OpenImagesConfig:
    classes: tuple[str, ...]  # MIDs, in label-id order
    names: dict[str, str]  # MID -> display name, every class the input describes
    resize_max_side: int | None = None
    jpeg_quality: int = 95
    keep_unannotated: bool = False

    def params(self) -> dict[str, Any]:
        return {
            "resize_max_side": self.resize_max_side,
            "jpeg_quality": self.jpeg_quality,
            "keep_unannotated": self.keep_unannotated,
            "num_classes": len(self.classes),
        }


class Unit(NamedTuple):
    """One piece of listing work: a CSV file, or a container of images (tar, staged tar.gz, zip, folder)."""

    kind: str  # "boxes" | "labels" | "machine" | "meta" | "tar" | "targz" | "zip" | "dir"
    url: str
    split: str | None  # from the file name; None: per row (metadata) or per member path (containers)


# ---------------------------------------------------------------- layout


def _split_of(name: str) -> str | None:
    """The split a file or folder name belongs to: train_0/, train_00.zip, oidv6-train-..., validation/, test."""
    base = name.lower().rsplit("/", 1)[-1]
    for split, pattern in (
        ("train", r"(^|[-_/])train"),
        ("validation", r"(^|[-_/])(validation|val)"),
        ("test", r"(^|[-_/])test"),
    ):
        if re.search(pattern + r"($|[-_./0-9])", base):
            return split
    return None


def _kind(url: str) -> str | None:
    name = url.rsplit("/", 1)[-1].lower()
    if name.endswith(".json") and "hierarchy" in name:
        return "hierarchy"
    if name.endswith(".csv"):
        if "segmentation" in name or "relationship" in name or "narratives" in name:
            return None  # other tasks: not converted
        if "bbox" in name:
            return "boxes"
        if "machine" in name:
            return "machine"
        if "human" in name or "imagelabels" in name:
            return "labels"
        if "rotation" in name or name.startswith("image_ids"):
            return "meta"
        if "class" in name and "description" in name:
            return "classes"
        return None
    if name.endswith((".tar.gz", ".tgz")):
        return "targz"
    if name.endswith(".tar"):
        return "tar"
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(IMAGE_EXT):
        return "image"
    return None


def _version(names: list[str]) -> str:
    joined = " ".join(n.rsplit("/", 1)[-1].lower() for n in names)
    if "challenge-2019" in joined:
        return "challenge2019"
    for v in ("oidv7", "oidv6"):
        if v in joined:
            return v[3:]
    if "image_ids_and_rotation" in joined:
        return "v6"
    if "with-labels-with-rotation" in joined:
        return "v5"
    return "v4"


@dataclasses.dataclass
class Layout:
    version: str
    units: list[Unit]
    class_files: list[str]
    splits: set[str]
    hierarchy_files: list[str] = dataclasses.field(default_factory=list)


def read_hierarchy(url: str) -> dict[str, str]:
    """{MID: parent MID} from `bbox_labels_600_hierarchy.json` (nested LabelName / Subcategory / Part)."""
    parents: dict[str, str] = {}

    def walk(node: dict, parent: str | None) -> None:
        mid = node.get("LabelName")
        if mid and parent and mid not in parents:
            parents[mid] = parent
        for child in (*node.get("Subcategory", ()), *node.get("Part", ())):
            walk(child, mid)

    try:
        walk(json.loads(storage.read_bytes(url)), None)
    except (ValueError, AttributeError) as e:
        raise LayoutError(f"{url}: not a class hierarchy ({e})") from None
    return parents


def detect_layout(root: str, splits: tuple[str, ...], version: str | None = None) -> Layout:
    files = storage.walk(root)
    units, class_files, hierarchy_files, dirs, found = [], [], [], set(), set()
    for url in files:
        kind = _kind(url)
        if kind is None:
            continue
        if kind == "classes":
            class_files.append(url)
        elif kind == "hierarchy":
            hierarchy_files.append(url)
        elif kind == "image":
            dirs.add(url.rsplit("/", 1)[0])
        else:
            # an annotation file whose name names no split (mmdetection's `annotations-human-imagelabels-
            # boxable.csv`) serves every split: its rows join the images by ImageID wherever they are
            split = None if kind in ("meta", "tar", "targz", "zip") else _split_of(url)
            units.append(Unit(kind, url, split))
            found |= {split or _split_of(url)} - {None}
    for d in sorted(dirs):
        units.append(Unit("dir", d, None))
        found |= {_split_of(d)} - {None}
    if not any(u.kind in ("tar", "targz", "zip", "dir") for u in units):
        shown = ", ".join(f.rsplit("/", 1)[-1] for f in files[:10]) or "nothing"
        raise LayoutError(f"{root}: no Open Images images (tars, zips or image folders); found {shown}")
    detected = _version([*files])
    if version is not None and version != detected:
        logging.getLogger(__name__).warning("--version %s given; the files look like %s", version, detected)
    missing = [s for s in splits if s not in found]
    if missing:
        raise LayoutError(f"{root}: no images or annotations for split(s) {missing}; found {sorted(found) or 'none'}")
    return Layout(version or detected, units, class_files, found, hierarchy_files[:1])


def read_class_descriptions(text: str) -> list[tuple[str, str]]:
    """(MID, display name) rows; a header row (`LabelName,DisplayName`) is skipped when present."""
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["labelname", "displayname"]:
        rows = rows[1:]
    return [(r[0].strip(), r[1].strip() if len(r) > 1 else r[0].strip()) for r in rows]


def _shipped(name: str) -> list[str]:
    return resources.files("pipelines").joinpath(f"data/openimages_classes_{name}.txt").read_text().split()


def choose_classes(layout: Layout, choice: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """The class list (label id order) and every known MID's display name.

    boxable: the input's `*class-descriptions-boxable*.csv`, else its only class-description file, else TFDS's
    boxable list; all: the input's full `class-descriptions.csv` (`oidv6-`/`oidv7-`), else TFDS's list;
    trainable: TFDS's trainable list; anything else: a file of MIDs (first column, CSV or one per line).
    """
    described = {f: read_class_descriptions(storage.read_bytes(f).decode("utf-8")) for f in layout.class_files}
    names = {mid: name for rows in described.values() for mid, name in rows}
    if not names:  # no class descriptions in the input (TFDS's V4 layout): every MID Open Images has is known
        names = {m: m for m in _shipped("all")}
    by_kind = {("boxable" if "boxable" in f.lower() or "500" in f else "all"): rows for f, rows in described.items()}
    if choice in ("boxable", "all", "trainable"):
        rows = by_kind.get(choice)
        if rows is None and choice == "boxable" and len(described) == 1:
            rows = next(iter(described.values()))
        mids = [m for m, _ in rows] if rows else _shipped(choice)
    else:
        text = storage.read_bytes(choice).decode("utf-8")
        mids = [r[0].strip() for r in csv.reader(io.StringIO(text)) if r and r[0].strip()]
        if mids and mids[0].lower() == "labelname":
            mids = mids[1:]
    if not mids:
        raise LayoutError(f"--classes {choice}: no classes found")
    for m in mids:
        names.setdefault(m, m)
    return tuple(mids), names


# ---------------------------------------------------------------- CSV rows (plain functions, no Beam)


def _float(v: str, what: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise ValueError(f"{what} is not a number: {v!r}") from None


def parse_csv(kind: str, text: Iterable[str], file: str, known: set[str] | None) -> Iterator[tuple[str, str, Any]]:
    """(ImageID, tag, payload) per row: tag "box" / "label" / "machine" / "meta" with a dict, or "bad" with the
    reason, which names the file and line. `known` is the set of MIDs the input describes (None: any)."""
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    header = [HEADER_FIXES.get(h.strip(), h.strip()) for h in header]
    need = {"boxes": BOX_REQUIRED, "labels": LABEL_REQUIRED, "machine": LABEL_REQUIRED, "meta": ("ImageID",)}[kind]
    lacking = [c for c in need if c not in header]
    if lacking:
        raise LayoutError(f"{file}: header {header} lacks {lacking}")
    width = len(header)
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        image_id = row[0].strip()
        where = f"{posixpath.basename(file)}:{line}"
        if len(row) != width:
            if kind == "meta" and len(row) >= 2:
                # ImageID and Subset lead, Rotation ends the row: those stay unambiguous; the free-text middle
                # (author, title, URLs) does not, so it is dropped and the row is marked
                rec = {"ImageID": image_id, "Subset": row[1].strip(), "Rotation": row[-1].strip()}
                rec["malformed"] = f"{where}: {len(row)} fields, expected {width}; only ImageID, Subset, Rotation read"
                yield image_id, "meta", rec
            else:
                yield image_id, "bad", f"{where}: {len(row)} fields, expected {width} ({','.join(header)})"
            continue
        rec = dict(zip(header, (c.strip() for c in row), strict=True))
        if kind == "meta":
            yield image_id, "meta", rec
            continue
        try:
            mid = rec["LabelName"]
            if known is not None and mid not in known:
                raise ValueError(f"unknown class {mid!r}")
            if kind == "boxes":
                box = {k: _float(rec[k], k) for k in ("XMin", "XMax", "YMin", "YMax")}
                if not all(0.0 <= v <= 1.0 for v in box.values()):
                    raise ValueError(f"coordinates outside [0, 1]: {box}")
                if box["XMin"] > box["XMax"] or box["YMin"] > box["YMax"]:
                    raise ValueError(f"min > max: {box}")
                box["mid"] = mid
                box["flags"] = {f: int(rec[f]) for f in FLAGS if rec.get(f, "") not in ("", None)}
                box["source"] = rec.get("Source")
                box["confidence"] = _float(rec.get("Confidence") or "1", "Confidence")
                yield image_id, "box", box
            else:
                conf = _float(rec["Confidence"], "Confidence")
                yield (
                    image_id,
                    "label" if kind == "labels" else "machine",
                    {
                        "mid": mid,
                        "source": rec.get("Source"),
                        "confidence": conf,
                    },
                )
        except ValueError as e:
            yield image_id, "bad", f"{where}: {e}"


def rotate_boxes(boxes: np.ndarray, rotation: int) -> np.ndarray:
    """Normalized [xmin, ymin, xmax, ymax] boxes after rotating their image `rotation` degrees counter-clockwise."""
    x0, y0, x1, y1 = boxes.T if len(boxes) else (np.zeros(0),) * 4
    if rotation == 90:
        out = (y0, 1 - x1, y1, 1 - x0)
    elif rotation == 180:
        out = (1 - x1, 1 - y1, 1 - x0, 1 - y0)
    elif rotation == 270:
        out = (1 - y1, x0, 1 - y0, x1)
    else:
        return boxes.astype(np.float32)
    return np.stack(out, axis=1).astype(np.float32) if len(boxes) else boxes.astype(np.float32)


# ---------------------------------------------------------------- listing and joining (in Beam workers)


def _member_split(name: str) -> str | None:
    parts = name.strip("/").split("/")
    for part in reversed(parts[:-1]):
        s = _split_of(part)
        if s:
            return s
    return None


def _image_pointer(image_id: str, url: str, offset: int, length: int, meta: dict) -> Pointer:
    try:
        validate_key(image_id, url=url)
    except ValueError as e:
        return Pointer(re.sub(r"[^0-9A-Za-z_-]", "_", image_id) or "empty", url, offset, 0, {**meta, "error": str(e)})
    return Pointer(image_id, url, offset, length, meta)


def _stage_targz(url: str, staging: str) -> str:
    """Decompress a .tar.gz once into a plain tar under the output's _staging/ folder (reused by re-runs)."""
    target = storage.join(staging, url.rsplit("/", 1)[-1].rsplit(".", 2)[0] + ".tar")
    done = target + ".done"
    if storage.exists(done) and storage.read_bytes(done).decode() == url:
        return target
    import gzip

    with (
        storage.open_read(url, block_size=8 << 20) as raw,
        gzip.GzipFile(fileobj=raw) as src,
        storage.atomic_write(target) as dst,
    ):
        while chunk := src.read(8 << 20):
            dst.write(chunk)
    storage.write_bytes(done, url.encode())
    return target


def list_unit(unit: Unit, cfg: OpenImagesConfig, staging: str, splits: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """(ImageID, (tag, split, payload)) for every row or image of one unit, in the requested splits (streamed:
    a bbox CSV of the full dataset has 15 million rows)."""
    known = set(cfg.names)
    if unit.kind in ("boxes", "labels", "machine", "meta"):
        if unit.split is not None and unit.split not in splits:
            return
        with storage.open_read(unit.url, block_size=8 << 20) as f:
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            for image_id, tag, payload in parse_csv(unit.kind, text, unit.url, known):
                split = unit.split
                if tag == "meta":
                    split = _split_of(payload.get("Subset", "")) if payload.get("Subset") else None
                    if split is not None and split not in splits:
                        continue
                yield image_id, (tag, split, payload)
        return
    # the container names the split (train_0.tar.gz, validation.zip, images/test/); TFDS's fake V4 validation tar
    # keeps its files under test/, so a member's own folder only counts when the container says nothing
    container = _member_split(unit.url + "/_") if unit.kind == "dir" else _split_of(unit.url)
    for name, url, offset, length, inflate in _list_images(unit, staging):
        split = container or _member_split(name)
        if split is not None and split not in splits:
            continue
        image_id = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        meta = {"name": name.rsplit("/", 1)[-1]}
        if inflate:
            meta["inflate"] = True
        yield image_id, ("image", split, _image_pointer(image_id, url, offset, length, meta))


def _list_images(unit: Unit, staging: str) -> Iterator[tuple[str, str, int, int, bool]]:
    """(member name, url, offset, length, deflated) of every image in a container."""
    if unit.kind == "dir":
        for name, size in storage.list_files(unit.url):
            if size is not None and name.lower().endswith(IMAGE_EXT):
                yield f"{unit.url}/{name}", storage.join(unit.url, name), 0, size, False
        return
    url = _stage_targz(unit.url, staging) if unit.kind == "targz" else unit.url
    with storage.open_read(url, block_size=1 << 16) as f:
        if unit.kind == "zip":
            with zipfile.ZipFile(f) as z:
                for info in z.infolist():
                    if info.is_dir() or not info.filename.lower().endswith(IMAGE_EXT):
                        continue
                    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                        raise LayoutError(f"{unit.url}: {info.filename}: unsupported zip compression")
                    f.seek(info.header_offset)
                    local = f.read(30)  # the local header's name and extra lengths can differ from the central's
                    start = info.header_offset + 30 + int.from_bytes(local[26:28], "little")
                    start += int.from_bytes(local[28:30], "little")
                    deflated = info.compress_type == zipfile.ZIP_DEFLATED
                    yield info.filename, url, start, info.compress_size, deflated
            return
        with tarfile.open(fileobj=f, mode="r:") as t:
            for m in t:
                if m.isfile() and m.name.lower().endswith(IMAGE_EXT):
                    yield m.name, url, m.offset_data, m.size, False


def join_image(element: tuple[str, list[tuple[str, str | None, Any]]], cfg: OpenImagesConfig, first_split: str):
    """(split, Pointer) for one ImageID from its image file(s) and annotation rows: the pointer to write, or a
    pointer carrying the reason it is quarantined."""
    image_id, records = element
    images = sorted((r for r in records if r[0] == "image"), key=lambda r: r[2].url)
    meta_rows = [r[2] for r in records if r[0] == "meta"]
    bad = sorted(r[2] for r in records if r[0] == "bad")
    boxes = [r[2] for r in records if r[0] == "box"]
    labels = [r[2] for r in records if r[0] == "label"]
    machine = [r[2] for r in records if r[0] == "machine"]
    meta = meta_rows[0] if meta_rows else {}
    split = next((r[1] for r in records if r[0] == "image" and r[1]), None)
    split = split or next((r[1] for r in records if r[1]), None) or first_split
    if not images:
        if not (boxes or labels or bad):
            return []  # only in the metadata index (it lists the whole dataset): not an input of this job
        where = sorted({r[2] for r in records if r[0] == "bad"})[:1] or ["the annotation files"]
        p = Pointer(image_id, "", 0, 0, {"error": f"annotated ({where[0]}) but no image file", "stage": "join"})
        return [(split, p)]
    out = []
    for extra in images[1:]:
        p = extra[2]
        reason = f"duplicate image file for {image_id}: {images[0][2].url} is used"
        out.append((split, p._replace(meta={**p.meta, "error": reason, "stage": "join"})))
    p = images[0][2]
    if "error" in p.meta:
        return [*out, (split, p._replace(meta={**p.meta, "stage": "list"}))]
    if bad:
        reason = f"malformed annotation row {bad[0]}" + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else "")
        return [*out, (split, p._replace(meta={**p.meta, "error": reason, "stage": "annotations"}))]
    if not (boxes or labels) and not cfg.keep_unannotated:
        reason = "no boxes and no image-level labels (--keep-unannotated keeps such images)"
        return [*out, (split, p._replace(meta={**p.meta, "error": reason, "stage": "filter"}))]
    ann = {"boxes": boxes, "imagelabels": labels, "machinelabels": machine, "meta": meta}
    return [*out, (split, p._replace(meta={**p.meta, "ann": ann}))]


# ---------------------------------------------------------------- the sample (in the shard writers)


def _rotation(meta: dict[str, Any]) -> int:
    r = (meta.get("Rotation") or "").strip()
    try:
        value = int(float(r))
    except ValueError:
        return 0  # "nan" or empty: the photo is gone from Flickr, no rotation known
    return value if value in (0, 90, 180, 270) else 0


def encode_sample(p: Pointer, data: bytes, *, cfg: OpenImagesConfig) -> dict[str, bytes]:
    if p.meta.get("inflate"):
        try:
            data = zlib.decompress(data, -15)
        except zlib.error as e:
            raise BadInput(f"zip member will not inflate: {e}", stage="read") from None
    ann = p.meta["ann"]
    meta = ann["meta"]
    rotation = _rotation(meta)
    img = prepare_image(data, resize_max_side=cfg.resize_max_side, quality=cfg.jpeg_quality)
    jpg, fixes, size = img.data, list(img.fixes), (img.width, img.height)
    if rotation:
        from PIL import Image

        with Image.open(io.BytesIO(jpg)) as im:
            im = im.convert("RGB").rotate(rotation, expand=True)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=cfg.jpeg_quality)
            jpg, size = buf.getvalue(), im.size
        fixes.append(f"rotated-{rotation}ccw")
    index = {m: i for i, m in enumerate(cfg.classes)}
    kept = [b for b in ann["boxes"] if b["mid"] in index]
    xyxy = np.array([[b["XMin"], b["YMin"], b["XMax"], b["YMax"]] for b in kept], np.float32).reshape(-1, 4)
    xyxy = rotate_boxes(xyxy, rotation)
    positives = sorted(
        {index[lb["mid"]] for lb in ann["imagelabels"] if lb["confidence"] >= 0.5 and lb["mid"] in index}
    )
    info = {
        "id": p.key,
        "name": p.meta.get("name"),
        "width": size[0],
        "height": size[1],
        "rotation": rotation,
        "fixes": fixes,
        "boxes": [
            {
                "mid": b["mid"],
                "label": index.get(b["mid"]),
                "name": cfg.names.get(b["mid"], b["mid"]),
                "xmin": b["XMin"],
                "xmax": b["XMax"],
                "ymin": b["YMin"],
                "ymax": b["YMax"],
                "flags": b["flags"],
                "source": b["source"],
                "confidence": b["confidence"],
            }
            for b in ann["boxes"]
        ],
        "imagelabels": [{**lb, "label": index.get(lb["mid"])} for lb in ann["imagelabels"]],
        "machinelabels": [{**lb, "label": index.get(lb["mid"])} for lb in ann["machinelabels"]],
        **{k.lower(): v for k, v in meta.items() if k in ("OriginalURL", "License", "Author", "Title", "malformed")},
    }
    return {
        "jpg": jpg,
        "json": json.dumps(info, sort_keys=True).encode(),
        "boxes": xyxy.astype("<f4").tobytes(),
        "labels": np.array([index[b["mid"]] for b in kept], "<i4").tobytes(),
        "imagelabels": np.array(positives, "<i4").tobytes(),
    }


def side_table(samples: list[tuple[str, bytes]]):
    """The Parquet side table of one shard: a row per box and per image-level label, from the samples' json."""
    import pyarrow as pa

    rows: dict[str, list] = {k: [] for k in ("ImageID", "kind", "LabelName", "label", "Source", "Confidence")}
    rows.update({k: [] for k in ("XMin", "XMax", "YMin", "YMax", *FLAGS)})
    for key, raw in samples:
        info = json.loads(raw)
        for kind, items in (("box", info["boxes"]), ("human", info["imagelabels"]), ("machine", info["machinelabels"])):
            for it in items:
                rows["ImageID"].append(key)
                rows["kind"].append(kind)
                rows["LabelName"].append(it["mid"])
                rows["label"].append(it.get("label"))
                rows["Source"].append(it.get("source"))
                rows["Confidence"].append(it.get("confidence"))
                for c in ("XMin", "XMax", "YMin", "YMax"):
                    rows[c].append(it.get(c.lower()))
                for f in FLAGS:
                    rows[f].append(it.get("flags", {}).get(f))
    types = {"label": pa.int32(), "Confidence": pa.float32(), **{f: pa.int8() for f in FLAGS}}
    types.update({c: pa.float32() for c in ("XMin", "XMax", "YMin", "YMax")})
    return pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in rows.items()})


# ---------------------------------------------------------------- the job


def main(argv: list[str] | None = None) -> int:
    import apache_beam as beam

    from pipelines.common.progress import ProgressLine, counter_summary
    from pipelines.common.sharding import Pointers, SplitPlan, WriteSplit
    from pipelines.common.shardwriter import PROGRESS_DIR
    from shards.manifest import read_manifest

    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    ours, beam_args = split_argv(list(sys.argv[1:] if argv is None else argv))
    p = base_parser("python -m pipelines openimages", __doc__.split("\n")[0], splits="train,validation")
    p.add_argument("--version", choices=VERSIONS, help="Open Images release (default: detected from file names)")
    p.add_argument("--classes", default="boxable", help="boxable | all | trainable | FILE of MIDs (default boxable)")
    p.add_argument("--resize-max-side", type=int, help="shrink images whose longer side is larger (re-encodes)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="quality of re-encoded JPEGs (default 95)")
    p.add_argument("--keep-unannotated", action="store_true", help="also write images with no box and no label")
    args = p.parse_args(ours)
    job = job_options(args, beam_args)
    try:
        layout = detect_layout(job.input, job.splits, args.version)
        classes, names = choose_classes(layout, args.classes)
        parents = read_hierarchy(layout.hierarchy_files[0]) if layout.hierarchy_files else {}
    except (LayoutError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = OpenImagesConfig(
        classes=classes,
        names=names,
        resize_max_side=args.resize_max_side,
        jpeg_quality=args.jpeg_quality,
        keep_unannotated=args.keep_unannotated,
    )
    staging = storage.join(job.output, "_staging")
    split_urls = {s: storage.join(job.output, s) for s in job.splits}
    encode = functools.partial(encode_sample, cfg=cfg)

    def listed(unit: Unit) -> Iterator[tuple[str, Any]]:
        use_storage_options(job.storage_options)
        yield from list_unit(unit, cfg, staging, job.splits)

    pipeline = beam.Pipeline(options=beam_pipeline_options(beam_args))
    joined = (
        pipeline
        | "Units" >> beam.Create(layout.units)
        | "Spread" >> beam.Reshuffle()
        | "List" >> beam.FlatMap(listed)
        | "Group by ImageID" >> beam.GroupByKey()
        | "Join" >> beam.FlatMap(join_image, cfg, job.splits[0])
    )
    by_split = joined | "By split" >> beam.Partition(
        lambda kv, n: job.splits.index(kv[0]) if kv[0] in job.splits else 0, len(job.splits)
    )
    for i, split in enumerate(job.splits):
        plan = SplitPlan(
            dataset="openimages",
            split=split,
            split_url=split_urls[split],
            fields=FIELDS,
            classes=list(classes),
            source={"url": job.input, "layout": layout.version},
            params={**job.params(), **cfg.params(), "classes": args.classes},
            seed=job.seed,
            shard_size=job.shard_size,
            min_shards=job.min_shards,
            max_bad_fraction=job.max_bad_fraction,
            writer_processes=job.writer_processes,
            storage_options=job.storage_options,
            benign_stages=("filter",),
            side_table="pipelines.openimages:side_table",
            extra={"class_names": [names[m] for m in classes], "class_parents": parents},
        )
        (
            by_split[i]
            | f"Pointers {split}" >> beam.Map(lambda kv: kv[1])
            | f"Batch {split}" >> beam.BatchElements(min_batch_size=64, max_batch_size=2048)
            | f"List {split}" >> beam.Map(Pointers).with_output_types(Pointers)
            | f"Write {split}" >> WriteSplit(plan, encode)
        )
    try:
        progress = ProgressLine("openimages", split_urls, PROGRESS_DIR) if job.progress else contextlib.nullcontext()
        with progress:
            result = pipeline.run()
            result.wait_until_finish()
    except Exception as e:  # the runner wraps worker errors; say what failed in one line
        print(f"error: the openimages job failed: {e}", file=sys.stderr)
        return 1
    counters = counter_summary(result)
    for split, url in split_urls.items():
        m = read_manifest(url)
        c = counters.get(f"openimages/{split}", {})
        print(
            f"{split}: {m['num_samples']} samples in {len(m['shards'])} shards "
            f"({c.get('shards_committed', 0)} written, {c.get('shards_reused', 0)} kept from an earlier run), "
            f"{m['quarantine']['count']} quarantined -> {url}"
        )
        if m["quarantine"]["count"]:
            print(f"  quarantined by reason: {reason_counts(storage.join(url, m['quarantine']['path']))}")
    return 0


def reason_counts(quarantine_url: str) -> str:
    """'3x filter: no boxes and no image-level labels; 1x annotations: 14 fields, expected 13', most first."""
    from shards.quarantine import read_quarantine

    counts: dict[str, int] = {}
    for q in read_quarantine(quarantine_url):
        reason = re.sub(r"\(.*?\)|malformed annotation row |[\w.-]+\.csv:\d+: ", "", q["reason"]).strip()
        key = f"{q['stage']}: {reason}"
        counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{n}x {k}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
