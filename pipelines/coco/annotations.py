"""COCO's annotation JSON, streamed (never loaded whole), and one image's records put together and checked.

The 2017 train instances JSON is ~450 MB; `json.load` of it holds 3-5 GB. Here each section (`images`,
`annotations`, `categories`) is read item by item with ijson's C parser, so memory stays at one item; the
grouping by image id is Beam's (a GroupByKey), not a dict in one process.

Rules for bad annotation rows (each becomes a quarantine entry of its own, keyed `ann-<id>`, and the image is
kept): a category id not in `categories`; a box with zero or negative width or height; a box that lies more than
`SLACK` (5%) of the image's size outside it (a box that pokes out by less is clipped, and the clip recorded); an
instance whose polygons all have fewer than 3 points; an annotation whose id an earlier one of the same file has
(found by the file's reader, on any image).
Annotations whose image id has no image record are quarantined the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

__all__ = ["SLACK", "JsonError", "assemble", "check_box", "iter_items", "polygons_of"]

SLACK = 0.05


class JsonError(ValueError):
    """A COCO JSON that does not parse: names the file and where."""


def iter_items(f: IO[bytes], section: str, url: str) -> Iterator[dict[str, Any]]:
    """The items of one top-level array (`images`, `annotations`, `categories`), one at a time."""
    import ijson

    try:
        yield from ijson.items(f, f"{section}.item", use_float=True)
    except ijson.JSONError as e:
        raise JsonError(f"{url}: malformed JSON while reading {section!r}: {e}") from None


def check_box(bbox: Any, width: float, height: float) -> tuple[list[float] | None, str | None]:
    """([x0, y0, x1, y1] in pixels, clipped to the image, or None; a note or the reason it is refused)."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return None, f"bbox {bbox!r} is not [x, y, w, h]"
    if not (w > 0 and h > 0):
        return None, f"bbox {bbox!r} has zero or negative width or height"
    x0, y0, x1, y1 = x, y, x + w, y + h
    if x0 < -SLACK * width or y0 < -SLACK * height or x1 > (1 + SLACK) * width or y1 > (1 + SLACK) * height:
        return None, f"bbox {bbox!r} lies outside the {width:g}x{height:g} image"
    clipped = [max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)]
    note = "clipped to the image" if clipped != [x0, y0, x1, y1] else None
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, f"bbox {bbox!r} has no area inside the {width:g}x{height:g} image"
    return clipped, note


def polygons_of(seg: Any) -> tuple[list[list[float]], int]:
    """(polygons with at least 3 points, how many were dropped) of a polygon segmentation."""
    if not isinstance(seg, list):
        return [], 0
    good = [[float(v) for v in p] for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
    return good, len(seg) - len(good)


def _bad(ann: dict[str, Any], source: str, reason: str) -> tuple[str, Any]:
    return ("bad", {"key": f"ann-{ann.get('id')}", "source": source, "reason": reason})


def assemble(image_id: Any, items: list[tuple[str, str, dict[str, Any]]], labels: dict[int, int]) -> Iterator[tuple[str, Any]]:  # fmt: skip
    """One image's records from every JSON of the split -> ("image", file name, record) and ("bad", entry) items.
    `items` are (kind, source file, item) with kind image / instances / keypoints / captions."""
    images = [rec for kind, _, rec in items if kind == "image"]
    anns: dict[Any, dict[str, Any]] = {}
    captions = []
    for kind, source, rec in items:
        if kind == "image":
            continue
        if not images:
            yield _bad(rec, source, f"annotation {rec.get('id')} names image id {image_id}, which no image record has")
            continue
        if kind == "duplicate":  # found by the file's reader: an id an earlier annotation of the file has
            yield _bad(rec, source, f"annotation id {rec.get('id')} appears twice in {source.rsplit('/', 1)[-1]}")
            continue
        if kind == "captions":
            captions.append({"id": rec.get("id"), "caption": rec.get("caption")})
            continue
        if kind == "keypoints" and rec.get("id") in anns:  # the same person annotation, with its keypoints
            anns[rec["id"]].update({k: rec[k] for k in ("keypoints", "num_keypoints") if k in rec})
            continue
        anns[rec.get("id")] = {**rec, "_source": source}
    if not images:
        return
    image = images[0]
    width, height = float(image.get("width") or 0), float(image.get("height") or 0)
    kept = []
    for ann in sorted(anns.values(), key=lambda a: (str(type(a.get("id"))), a.get("id"))):
        source = ann.pop("_source")
        if ann.get("category_id") not in labels:
            yield _bad(ann, source, f"category id {ann.get('category_id')!r} is not in `categories`")
            continue
        box, note = check_box(ann.get("bbox"), width, height)
        if box is None:
            yield _bad(ann, source, note)
            continue
        polygons, dropped = polygons_of(ann.get("segmentation"))
        if isinstance(ann.get("segmentation"), list) and ann.get("segmentation") and not polygons:
            yield _bad(ann, source, "every polygon has fewer than 3 points")
            continue
        fixes = [note] if note else []
        if dropped:
            fixes.append(f"{dropped} polygon(s) of fewer than 3 points dropped")
        kept.append({**ann, "_box": box, "_fixes": fixes})  # polygons are taken from `segmentation` again
    yield ("image", image.get("file_name"), {"image": image, "annotations": kept, "captions": captions})
