"""One Open Images sample, in the shard writers: the image (fixed, rotated upright), its numeric boxes and labels,
its json; and the rows of the Parquet side table."""

from __future__ import annotations

import dataclasses
import functools
import io
import json
from typing import Any

import numpy as np

from pipelines.common.archives import member_bytes
from pipelines.common.images import prepare_image
from pipelines.common.records import Pointer
from pipelines.openimages.annotations import FLAGS, rotate_boxes

__all__ = ["FIELDS", "OpenImagesConfig", "encode_sample", "side_table"]

FIELDS = {
    "jpg": "image/jpeg: baseline RGB JPEG, rotated upright where the metadata says so",
    "json": "{id, split, boxes: [{mid, label, xmin, xmax, ymin, ymax, flags, source, confidence}], imagelabels, "
    "machinelabels, rotation, url, license, author, title, width, height, fixes}",
    "boxes": "float32 N x 4, little-endian: normalized [xmin, ymin, xmax, ymax] of the boxes whose class is in `classes`",
    "labels": "int32 N, little-endian: index in `classes` of each box",
    "imagelabels": "int32, little-endian: indexes in `classes` of the human-verified positive image-level labels",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class OpenImagesConfig:
    classes: tuple[str, ...]  # MIDs, in label-id order
    names: dict[str, str]  # MID -> display name, every class the input describes
    resize_max_side: int | None = None
    jpeg_quality: int = 95
    keep_unannotated: bool = False

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """MID -> label id; built once per worker process, not per sample."""
        return {m: i for i, m in enumerate(self.classes)}

    def params(self) -> dict[str, Any]:
        return {
            "resize_max_side": self.resize_max_side,
            "jpeg_quality": self.jpeg_quality,
            "keep_unannotated": self.keep_unannotated,
            "num_classes": len(self.classes),
        }


def _rotation(meta: dict[str, Any]) -> int:
    r = (meta.get("Rotation") or "").strip()
    try:
        value = int(float(r))
    except ValueError:
        return 0  # "nan" or empty: the photo is gone from Flickr, no rotation known
    return value if value in (0, 90, 180, 270) else 0


def encode_sample(p: Pointer, data: bytes, *, cfg: OpenImagesConfig) -> dict[str, bytes]:
    data = member_bytes(data, p.meta)
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
    index = cfg.index
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
