"""Listing and joining, in Beam workers: image pointers out of tars, staged tar.gz, zips and folders; CSV rows
keyed by ImageID; one pointer per image (or the reason it is quarantined) once they are grouped."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterator
from typing import Any

from pipelines.common.archives import zip_members
from pipelines.common.records import Pointer
from pipelines.openimages.annotations import parse_csv
from pipelines.openimages.layout import IMAGE_EXT, LayoutError, Unit, split_of
from pipelines.openimages.samples import OpenImagesConfig
from shards import storage
from shards.keys import validate_key

__all__ = ["join_image", "list_unit"]


def _member_split(name: str) -> str | None:
    parts = name.strip("/").split("/")
    for part in reversed(parts[:-1]):
        s = split_of(part)
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
            for image_id, tag, payload, where in parse_csv(unit.kind, text, unit.url, known, lines=True):
                split = unit.split
                if tag == "meta":
                    split = split_of(payload.get("Subset", "")) if payload.get("Subset") else None
                    if split is not None and split not in splits:
                        continue
                yield image_id, (tag, split, payload, where)
        return
    # the container names the split (train_0.tar.gz, validation.zip, images/test/); TFDS's fake V4 validation tar
    # keeps its files under test/, so a member's own folder only counts when the container says nothing
    container = _member_split(unit.url + "/_") if unit.kind == "dir" else split_of(unit.url)
    for name, url, offset, length, inflate in _list_images(unit, staging):
        split = container or _member_split(name)
        if split is not None and split not in splits:
            continue
        image_id = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        # the file the user has: the archive and its member (a .tar.gz is read from a staged copy under the
        # output, which must not be what a quarantine entry points at), or the image file itself
        meta = {"name": name.rsplit("/", 1)[-1], "source": name if unit.kind == "dir" else f"{unit.url}:{name}"}
        if inflate is not False:
            meta["inflate"] = inflate  # the member's declared size
        yield image_id, ("image", split, _image_pointer(image_id, url, offset, length, meta))


def _list_images(unit: Unit, staging: str) -> Iterator[tuple[str, str, int, int, int | bool]]:
    """(member name, url, offset, length, declared size if deflated else False) of every image in a container."""
    if unit.kind == "dir":
        for name, size in storage.list_files(unit.url):
            if size is not None and name.lower().endswith(IMAGE_EXT):
                yield f"{unit.url}/{name}", storage.join(unit.url, name), 0, size, False
        return
    url = _stage_targz(unit.url, staging) if unit.kind == "targz" else unit.url
    with storage.open_read(url, block_size=1 << 16) as f:
        if unit.kind == "zip":
            try:
                for m in zip_members(f, unit.url, lambda name: name.lower().endswith(IMAGE_EXT)):
                    yield m.name, url, m.offset, m.length, m.size if m.deflated else False
            except ValueError as e:
                raise LayoutError(str(e)) from None
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
        rows = sorted({r[3] for r in records if len(r) > 3 and r[0] != "meta"})
        where = ", ".join(rows[:3]) + (f" and {len(rows) - 3} more rows" if len(rows) > 3 else "")
        meta = {"error": f"annotated ({where}) but no image file", "stage": "join", "source": rows[0]}
        return [(split, Pointer(image_id, "", 0, 0, meta))]
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
