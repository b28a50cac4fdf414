"""Open Images layouts: which file is what (by its official name), the split and release, the class list."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import re
from importlib import resources
from typing import NamedTuple

from pipelines.common import errors
from shards import storage

__all__ = [
    "IMAGE_EXT",
    "VERSIONS",
    "Layout",
    "LayoutError",
    "Unit",
    "choose_classes",
    "detect_layout",
    "read_class_descriptions",
    "read_hierarchy",
    "split_of",
]

VERSIONS = ("v4", "v5", "v6", "v7", "challenge2019")
IMAGE_EXT = (".jpg", ".jpeg", ".png")


class LayoutError(errors.LayoutError):
    """The input is not an Open Images layout this job knows, or a piece is missing."""


class Unit(NamedTuple):
    """One piece of listing work: a CSV file, or a container of images (tar, staged tar.gz, zip, folder)."""

    kind: str  # "boxes" | "labels" | "machine" | "meta" | "tar" | "targz" | "zip" | "dir"
    url: str
    split: str | None  # from the file name; None: per row (metadata) or per member path (containers)


def split_of(name: str) -> str | None:
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


def detect_layout(root: str, splits: tuple[str, ...], version: str | None = None, *, required: bool = True) -> Layout:
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
            split = None if kind in ("meta", "tar", "targz", "zip") else split_of(url)
            units.append(Unit(kind, url, split))
            found |= {split or split_of(url)} - {None}
    for d in sorted(dirs):
        units.append(Unit("dir", d, None))
        found |= {split_of(d)} - {None}
    if not any(u.kind in ("tar", "targz", "zip", "dir") for u in units):
        shown = ", ".join(f.rsplit("/", 1)[-1] for f in files[:10]) or "nothing"
        raise LayoutError(f"{root}: no Open Images images (tars, zips or image folders); found {shown}")
    detected = _version([*files])
    if version is not None and version != detected:
        logging.getLogger(__name__).warning("--version %s given; the files look like %s", version, detected)
    missing = [s for s in splits if s not in found]
    if missing and (required or len(missing) == len(splits)):
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
