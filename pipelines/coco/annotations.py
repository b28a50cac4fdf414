"""COCO's annotation JSON, streamed (never loaded whole), and one image's records put together and checked.

The 2017 train instances JSON is ~450 MB; `json.load` of it holds 3-5 GB. Here each section (`images`,
`annotations`, `categories`) is read item by item with ijson's C parser, so memory stays at one item; the
grouping by image id is Beam's (a GroupByKey), not a dict in one process.

Rules for bad annotation rows (each becomes a quarantine entry of its own, keyed `ann-<id>`, and the image is
kept): a category id not in `categories`; a box with zero or negative width or height; a box that lies more than
`SLACK` (5%) of the image's size outside it (a box that pokes out by less is clipped, and the clip recorded); an
instance whose polygons all have fewer than 3 points; an annotation whose id an earlier one of the same file has
(found by the file's reader, on any image).
Annotations whose image id has no image record are quarantined the same way, and so is every field that would
not fit its stored type: an `id` or `num_keypoints` that is not a whole number, `iscrowd` other than 0/1, an
`area` or a coordinate that is not a finite number, `keypoints` that are not 17 (x, y, v) triples.

An image record is checked too (`check_image`): a whole `id`, a string `file_name`, `width`/`height` positive
whole numbers (checked against the decoded image by the writer); two records with one id, or one file name, make
every one of them ambiguous, so all are quarantined (with the file) rather than one picked.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import IO, Any

__all__ = [
    "SLACK",
    "JsonError",
    "assemble",
    "check_annotation",
    "check_box",
    "check_image",
    "iter_items",
    "polygons_of",
]

SLACK = 0.05


class JsonError(ValueError):
    """A COCO JSON that does not parse: names the file and where."""


def iter_items(f: IO[bytes], section: str, url: str) -> Iterator[dict[str, Any]]:
    """The items of one top-level array (`images`, `annotations`, `categories`), one at a time."""
    import ijson

    from pipelines.common.jsondepth import DepthChecked, NestingError

    try:
        yield from ijson.items(DepthChecked(f, url), f"{section}.item", use_float=True)
    except NestingError as e:
        raise JsonError(str(e)) from None
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


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_image(image: dict[str, Any]) -> str | None:
    """Why an image record cannot be used as it is, or None."""
    if not _whole(image.get("id")):
        return f"image record id {image.get('id')!r} is not a whole number"
    if not isinstance(image.get("file_name"), str):
        return f"image {image.get('id')}: file_name {image.get('file_name')!r} is not a string"
    for k in ("width", "height"):
        v = image.get(k)
        if v is not None and not (_whole(v) and 0 < v <= 1 << 20):
            return f"image {image['id']} ({image['file_name']}): {k} {v!r} is not a whole number of pixels"
    return None


def check_annotation(ann: dict[str, Any], labels: dict[int, int]) -> str | None:
    """Why an annotation's fields would not fit the numeric fields and the side table, or None."""
    if not _whole(ann.get("id")):
        return f"annotation id {ann.get('id')!r} is not a whole number"
    cat = ann.get("category_id")
    if not _whole(cat) or cat not in labels:
        return f"category id {cat!r} is not in `categories`"
    if ann.get("iscrowd", 0) not in (0, 1) or isinstance(ann.get("iscrowd"), float):
        return f"iscrowd {ann.get('iscrowd')!r} is not 0 or 1"
    if "area" in ann and not (_finite(ann["area"]) and ann["area"] >= 0):
        return f"area {ann['area']!r} is not a finite number >= 0"
    if "num_keypoints" in ann and not (_whole(ann["num_keypoints"]) and 0 <= ann["num_keypoints"] <= 17):
        return f"num_keypoints {ann['num_keypoints']!r} is not a whole number from 0 to 17"
    kp = ann.get("keypoints")
    if kp is not None and not (isinstance(kp, list) and len(kp) in (0, 51) and all(_finite(v) for v in kp)):
        return "keypoints are not 17 (x, y, v) triples of finite numbers"
    seg = ann.get("segmentation")
    if isinstance(seg, list) and not all(isinstance(p, list) and all(_finite(v) for v in p) for p in seg):
        return "a polygon holds something other than finite numbers"
    return None


def polygons_of(seg: Any) -> tuple[list[list[float]], int]:
    """(polygons with at least 3 points, how many were dropped) of a polygon segmentation."""
    if not isinstance(seg, list):
        return [], 0
    good = [[float(v) for v in p] for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
    return good, len(seg) - len(good)


def _bad(ann: dict[str, Any], source: str, reason: str) -> tuple[str, Any]:
    return ("bad", {"key": f"ann-{ann.get('id')}", "source": source, "reason": reason})


def assemble(
    image_id: Any, items: list[tuple[str, str, dict[str, Any]]], labels: dict[int, int]
) -> Iterator[tuple[str, Any]]:
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
    # every JSON of a split (instances, keypoints, captions) lists the same image record: one record is one
    # (file_name, width, height); two different ones under one id are ambiguous
    images = list({(str(r.get("file_name")), str(r.get("width")), str(r.get("height"))): r for r in images}.values())
    if len(images) > 1:  # which record is the file's? none is taken, each is reported
        for rec in images:
            yield (
                "bad",
                {
                    "key": f"img-{rec.get('id')}",
                    "source": "json",
                    "reason": f"image id {image_id} has {len(images)} image records (file names "
                    f"{sorted(str(r.get('file_name')) for r in images)}); its annotations cannot be told "
                    "apart",
                },
            )
        for ann in anns.values():
            yield _bad(
                ann,
                ann["_source"],
                f"annotation {ann.get('id')} names image id {image_id}, which has {len(images)} image records",
            )
        return
    image = images[0]
    problem = check_image(image)
    if problem:  # the file is quarantined with this reason (by its writer); its annotations go with it
        yield ("image", image.get("file_name"), {"image": image, "annotations": [], "captions": [], "error": problem})
        return
    width, height = float(image.get("width") or 0), float(image.get("height") or 0)
    kept = []
    for ann in sorted(anns.values(), key=lambda a: (str(type(a.get("id"))), a.get("id"))):
        source = ann.pop("_source")
        problem = check_annotation(ann, labels)
        if problem:
            yield _bad(ann, source, problem)
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
