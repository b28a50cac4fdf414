"""Where a COCO download keeps its images and annotation JSONs, in any of the layouts people have.

Accepted under `--input`, found by name at any depth: image folders `train2017/`, `val2017/`, `test2017/` (or the
2014 ones) or their zips (`train2017.zip`, read in place by member offsets); annotation JSONs
`instances_<split><year>.json`, `person_keypoints_*.json`, `captions_*.json`, `image_info_test<year>.json`, loose
or inside `annotations_trainval<year>.zip` / `image_info_test<year>.zip` (streamed from the zip, never extracted).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

from pipelines.common import errors
from shards import storage

__all__ = ["SPLIT_NAMES", "CocoLayout", "JsonUnit", "LayoutError", "detect_layout", "list_images", "open_json"]

SPLIT_NAMES = {"train": "train", "validation": "val", "test": "test"}
_IMAGES_DIR = re.compile(r"^(train|val|test)(2014|2017)$")
_IMAGES_ZIP = re.compile(r"^(train|val|test)(2014|2017)\.zip$")
_JSON = re.compile(r"^(instances|person_keypoints|captions|image_info)_(train|val|test)(2014|2017)\.json$")
_JSON_ZIP = re.compile(r"^(annotations_trainval|image_info_test)(2014|2017)\.zip$")
KINDS = {"instances": "instances", "person_keypoints": "keypoints", "captions": "captions", "image_info": "image_info"}


class LayoutError(errors.LayoutError):
    """Not a COCO layout, or a requested split has no images or no annotations."""


@dataclasses.dataclass(frozen=True)
class JsonUnit:
    kind: str  # instances | keypoints | captions | image_info
    url: str  # the JSON, or the zip holding it
    member: str | None = None  # its name inside the zip

    @property
    def source(self) -> str:
        return f"{self.url}:{self.member}" if self.member else self.url


@dataclasses.dataclass
class CocoLayout:
    year: str
    images: dict[str, list[tuple[str, str]]]  # split -> [("dir" | "zip", url)]
    jsons: dict[str, list[JsonUnit]]  # split -> its annotation files


def _zip_jsons(url: str) -> Iterator[tuple[str, str, str, str]]:
    from pipelines.common.archives import ArchiveError, open_zip

    with storage.open_read(url, block_size=1 << 20) as f:
        try:
            z = open_zip(f, url)
        except ArchiveError as e:
            raise LayoutError(str(e)) from None
        for name in z.namelist():
            m = _JSON.match(name.rsplit("/", 1)[-1])
            if m:
                yield m.group(1), m.group(2), m.group(3), name


def _check_zip(url: str) -> None:
    from pipelines.common.archives import ArchiveError, check_zip

    try:
        check_zip(url)
    except ArchiveError as e:
        raise LayoutError(str(e)) from None


def detect_layout(root: str, splits: tuple[str, ...], year: str | None = None, *, required: bool = True) -> CocoLayout:
    """Find each requested split's images and annotation files; LayoutError saying what is missing."""
    images: dict[tuple[str, str], list[tuple[str, str]]] = {}
    jsons: dict[tuple[str, str], list[JsonUnit]] = {}
    folders: set[str] = set()
    for url in storage.walk(root):
        folder, name = url.rsplit("/", 1)
        parent = folder.rsplit("/", 1)[-1]
        if _IMAGES_DIR.match(parent) and folder not in folders:
            folders.add(folder)
            m = _IMAGES_DIR.match(parent)
            images.setdefault((m.group(1), m.group(2)), []).append(("dir", folder))
        if m := _IMAGES_ZIP.match(name):
            _check_zip(url)
            images.setdefault((m.group(1), m.group(2)), []).append(("zip", url))
        elif m := _JSON.match(name):
            jsons.setdefault((m.group(2), m.group(3)), []).append(JsonUnit(KINDS[m.group(1)], url))
        elif _JSON_ZIP.match(name):
            for kind, split, y, member in _zip_jsons(url):
                jsons.setdefault((split, y), []).append(JsonUnit(KINDS[kind], url, member))
    years = sorted({y for _, y in images} | {y for _, y in jsons})
    if not years:
        raise LayoutError(
            f"{root}: no COCO images or annotations (train2017/ or train2017.zip, "
            "annotations/instances_train2017.json or annotations_trainval2017.zip)"
        )
    year = year or years[-1]
    out = CocoLayout(year, {}, {})
    for split in splits:
        short = SPLIT_NAMES.get(split)
        if short is None:
            raise LayoutError(f"unknown split {split!r}; COCO has {', '.join(SPLIT_NAMES)}")
        found_images, found_json = images.get((short, year)), jsons.get((short, year))
        if not required and not found_images and not found_json:
            continue  # a default split the input does not have
        if not found_images or not found_json:
            missing = " and ".join(w for w, f in (("images", found_images), ("annotations", found_json)) if not f)
            raise LayoutError(f"{root}: split {split} ({short}{year}) has no {missing}")
        kinds = {u.kind for u in found_json}
        if short != "test" and "instances" not in kinds:
            raise LayoutError(f"{root}: {short}{year} has no instances_{short}{year}.json (found {sorted(kinds)})")
        out.images[split] = sorted(found_images)
        out.jsons[split] = sorted(found_json, key=lambda u: (u.kind, u.url))
    if not out.images:
        raise LayoutError(f"{root}: none of the splits {list(splits)} has images and annotations")
    return out


def open_json(unit: JsonUnit):
    """The JSON as a binary stream (a zip member is inflated as it is read)."""
    if unit.member is None:
        return storage.open_read(unit.url, block_size=8 << 20)

    from pipelines.common.archives import open_zip

    f = storage.open_read(unit.url, block_size=8 << 20)
    z = open_zip(f, unit.url)
    member = z.open(unit.member)
    close = member.close

    def closing() -> None:
        close()
        z.close()
        f.close()

    member.close = closing
    return member


def list_images(kind: str, url: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, where its bytes are) of every image of a folder or zip."""
    if kind == "dir":
        for name, size in storage.list_files(url):
            if size is not None:
                yield name, {"url": storage.join(url, name), "offset": 0, "length": size, "inflate": False}
        return
    from pipelines.common.archives import zip_members

    with storage.open_read(url, block_size=1 << 20) as f:
        for m in zip_members(f, url, lambda n: not n.endswith("/")):
            yield (
                m.name.rsplit("/", 1)[-1],
                {
                    "url": url,
                    "offset": m.offset,
                    "length": m.length,
                    "inflate": m.size if m.deflated else False,
                    "member": m.name,
                },
            )
