"""One COCO sample, in the shard writers: the image, its json, and its annotations as numeric fields in the
layouts DALI's operators take; and the rows of the Parquet side table."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from pipelines.coco.annotations import polygons_of
from pipelines.coco.staging import read_record
from pipelines.common.archives import member_bytes
from pipelines.common.errors import BadInput
from pipelines.common.images import prepare_image
from pipelines.common.records import Pointer

__all__ = ["CocoConfig", "encode_sample", "fields_for", "side_table"]

NUMERIC = {
    "boxes": "float32 N x 4, little-endian: [x0, y0, x1, y1] normalized by the image record's width and height",
    "labels": "int32 N: contiguous label id (index in `classes`; `category_ids[label]` is COCO's id)",
    "iscrowd": "uint8 N",
    "area": "float32 N: COCO's area in pixels",
    "polygons": "int32 M x 3: [object index, first vertex, end vertex) per polygon (DALI's segmentation layout)",
    "vertices": "float32 V x 2: polygon vertices [x, y] normalized like the boxes",
}
KEYPOINTS = {"keypoints": "float32 N x 17 x 3: [x, y] normalized, visibility v (0 absent, 1 hidden, 2 visible)"}


def fields_for(kinds: set[str]) -> dict[str, str]:
    """The fields of a split with these annotation files: every sample of a split has the same fields."""
    fields = {
        "jpg": "image/jpeg: baseline RGB JPEG (fixed where needed, as the ImageNet job does)",
        "json": "{image: the image record, annotations: every field of each (RLE masks here), captions, fixes}",
    }
    if "instances" in kinds:
        fields.update(NUMERIC)
    if "keypoints" in kinds:
        fields.update(KEYPOINTS)
    return fields


@dataclasses.dataclass(frozen=True, kw_only=True)
class CocoConfig:
    labels: dict[int, int]  # COCO category id -> contiguous label
    fields: tuple[str, ...]
    keep_empty: bool = True
    resize_max_side: int | None = None
    jpeg_quality: int = 95

    def params(self) -> dict[str, Any]:
        return {
            "keep_empty": self.keep_empty,
            "resize_max_side": self.resize_max_side,
            "jpeg_quality": self.jpeg_quality,
        }


def _numeric(anns: list[dict[str, Any]], cfg: CocoConfig, width: float, height: float) -> dict[str, bytes]:
    scale = np.array([width, height, width, height], np.float32)
    boxes = np.array([a["_box"] for a in anns], np.float32).reshape(-1, 4) / scale
    polygons, vertices = [], []
    for i, a in enumerate(anns):
        for poly in polygons_of(a.get("segmentation"))[0]:
            start = sum(len(v) for v in vertices)
            xy = np.asarray(poly, np.float32).reshape(-1, 2) / scale[:2]
            vertices.append(xy)
            polygons.append((i, start, start + len(xy)))
    out = {
        "boxes": boxes.astype("<f4").tobytes(),
        "labels": np.array([cfg.labels[a["category_id"]] for a in anns], "<i4").tobytes(),
        "iscrowd": np.array([int(a.get("iscrowd", 0)) for a in anns], np.uint8).tobytes(),
        "area": np.array([float(a.get("area", 0)) for a in anns], "<f4").tobytes(),
        "polygons": np.array(polygons, "<i4").reshape(-1, 3).tobytes(),
        "vertices": (np.concatenate(vertices) if vertices else np.zeros((0, 2), np.float32)).astype("<f4").tobytes(),
    }
    if "keypoints" in cfg.fields:
        kp = np.zeros((len(anns), 17, 3), np.float32)
        for i, a in enumerate(anns):
            values = a.get("keypoints") or []
            if len(values) == 51:
                kp[i] = np.asarray(values, np.float32).reshape(17, 3) / np.array([width, height, 1], np.float32)
        out["keypoints"] = kp.astype("<f4").tobytes()
    return out


def check_size(image: dict[str, Any], width: int, height: int, name: str) -> tuple[str | None, str | None]:
    """(why the record's width/height cannot be the file's, a note) - boxes are normalized by the record's size,
    so it must be the file's, or the file a scaled copy (the same shape, within the rounding of both sides: people
    shrink COCO's images and keep the JSON, whose boxes are then still right once normalized)."""
    w, h = image.get("width"), image.get("height")
    if w is None or h is None:
        return None, None
    if (w, h) == (width, height):
        return None, None
    if abs(width * h / w - height) < 0.5 * h / w + 0.5 and abs(height * w / h - width) < 0.5 * w / h + 0.5:
        return None, f"the file is {width}x{height}, a scaled copy of the {w}x{h} the record says"
    return (
        f"the image record ({image.get('id')}) says {w}x{h} but {name} is {width}x{height}: its boxes would be "
        "normalized by the wrong size"
    ), None


def encode_sample(p: Pointer, data: bytes, *, cfg: CocoConfig) -> dict[str, bytes]:
    rec = read_record(p.meta["coco"])
    if rec.get("error"):
        raise BadInput(rec["error"], stage="annotations")
    anns = rec["annotations"]
    if not anns and not cfg.keep_empty and "boxes" in cfg.fields:
        raise BadInput("no annotations (--drop-empty)", stage="filter")
    data = member_bytes(data, p.meta)
    img = prepare_image(data, resize_max_side=cfg.resize_max_side, quality=cfg.jpeg_quality)
    image = rec["image"]
    problem, note = check_size(image, img.original_width, img.original_height, p.meta.get("name", p.key))
    if problem:
        raise BadInput(problem, stage="annotations")
    width, height = float(image.get("width") or img.original_width), float(image.get("height") or img.original_height)
    info = {
        "image": image,
        "annotations": [{k: v for k, v in a.items() if not k.startswith("_")} | {"fixes": a["_fixes"]} for a in anns],
        "captions": rec["captions"],
        "stored_width": img.width,
        "stored_height": img.height,
        "fixes": list(img.fixes) + ([note] if note else []),
    }
    out = {"jpg": img.data, "json": json.dumps(info, sort_keys=True).encode()}
    if "boxes" in cfg.fields:
        out.update(_numeric(anns, cfg, width, height))
    return out


def side_table(samples: list[tuple[str, bytes]]):
    """The Parquet side table of one shard: a row per annotation, as people query COCO before training."""
    import pyarrow as pa

    cols: dict[str, list] = {
        k: []
        for k in (
            "key",
            "image_id",
            "id",
            "category_id",
            "iscrowd",
            "area",
            "x",
            "y",
            "w",
            "h",
            "num_keypoints",
            "segmentation",
        )
    }
    for key, raw in samples:
        info = json.loads(raw)
        for a in info["annotations"]:
            bbox = list(a.get("bbox") or [None] * 4) + [None] * 4
            seg = a.get("segmentation")
            cols["key"].append(key)
            cols["image_id"].append(info["image"].get("id"))
            cols["id"].append(a.get("id"))
            cols["category_id"].append(a.get("category_id"))
            cols["iscrowd"].append(int(a.get("iscrowd", 0)))
            cols["area"].append(a.get("area"))
            for c, v in zip(("x", "y", "w", "h"), bbox[:4], strict=True):
                cols[c].append(v)
            cols["num_keypoints"].append(a.get("num_keypoints"))
            cols["segmentation"].append("rle" if isinstance(seg, dict) else "polygons" if seg else "none")
    types = {
        "image_id": pa.int64(),
        "id": pa.int64(),
        "category_id": pa.int32(),
        "iscrowd": pa.uint8(),
        "area": pa.float32(),
        "num_keypoints": pa.int32(),
        **{c: pa.float32() for c in "xywh"},
    }
    return pa.table({k: pa.array(v, type=types.get(k, pa.string())) for k, v in cols.items()})
