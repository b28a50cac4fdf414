"""COCO's DALI graphs and the host step that feeds them.

The host step (`Objects.prepare`, on the loader's reader thread) reorders each image's objects so that crowd
objects come last, and hands DALI: the non-crowd boxes (the only ones `random_bbox_crop`'s IoU constraint sees),
the crowd boxes and their ids, one float row of attributes per object, and polygons renumbered to that order.
DALI then gathers the objects a crop keeps with `segmentation.select_masks` (one "polygon" per object over the
attribute rows: it selects rows by id, which no other DALI operator does) and the polygons with the same ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from loaders.graphs import decoder, normalize, on_device

__all__ = ["FLIP_KEYPOINTS", "Objects", "eval_graph", "eval_size", "train_graph"]

# COCO's 17 person keypoints, left and right swapped: what a horizontal flip does to their meaning
FLIP_KEYPOINTS = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
THRESHOLDS = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
K = 17


def _parse(dtype: str, *shape: int):
    return lambda data: np.frombuffer(data, dtype).reshape(-1, *shape)


PARSERS = {
    "boxes": _parse("<f4", 4),
    "labels": _parse("<i4"),
    "iscrowd": _parse("u1"),
    "polygons": _parse("<i4", 3),
    "vertices": _parse("<f4", 2),
    "keypoints": _parse("<f4", K, 3),
}
DALI_TYPES = {"FLOAT": ("boxes", "vertices", "keypoints"), "INT32": ("labels", "polygons"), "UINT8": ("iscrowd",)}


class Objects:
    """The host step for the detection, instance and keypoints tasks. An object's row of attributes is
    [label, iscrowd] and, with keypoints, x[17], y[17], v[17], then the same for the left/right-swapped order (the
    graph picks one of the two per sample, by its flip)."""

    def __init__(self, *, train: bool, polygons: bool, keypoints: bool):
        self.train, self.polygons, self.keypoints = train, polygons, keypoints
        self.fields = ["jpg", "boxes", "labels", "iscrowd"] + (["polygons", "vertices"] if polygons else [])
        self.fields += ["keypoints"] if keypoints else []
        self.inputs = {"jpg": "UINT8", "boxes": "FLOAT", "crowd_boxes": "FLOAT", "objects": "FLOAT"}
        if train:  # what the crop's gather takes
            self.inputs |= {"crowd_ids": "INT32", "object_rows": "INT32"}
        if polygons:
            self.inputs |= {"polygons": "INT32", "vertices": "FLOAT"}
        self.parsers = {f: PARSERS[f] for f in self.fields if f != "jpg"}
        self.host_dtypes = {f: t for t, fs in DALI_TYPES.items() for f in fs if f in self.parsers}

    def prepare(self, cols: dict[str, Any]) -> dict[str, list[np.ndarray]]:
        out: dict[str, list] = {name: [] for name in self.inputs}
        out["jpg"] = cols["jpg"]
        for i in range(len(cols["jpg"])):
            boxes, labels, crowd = cols["boxes"][i], cols["labels"][i], cols["iscrowd"][i]
            n = len(boxes)
            if len(labels) != n or len(crowd) != n:
                raise ValueError(f"a sample has {n} boxes, {len(labels)} labels and {len(crowd)} crowd flags")
            objects = np.empty((n, 2 + (6 * K if self.keypoints else 0)), np.float32)
            objects[:, 0], objects[:, 1] = labels, crowd
            if self.keypoints:
                kp = cols["keypoints"][i]
                if len(kp) != n:
                    raise ValueError(f"a sample has {n} boxes and {len(kp)} keypoint rows")
                both = np.concatenate([kp, kp[:, FLIP_KEYPOINTS]], axis=2)  # n x 17 x 6
                objects[:, 2:] = both.transpose(0, 2, 1).reshape(n, 6 * K)
            order = np.argsort(crowd, kind="stable") if crowd.any() else None
            if order is not None:
                boxes, objects = boxes[order], objects[order]
            k = n - int(np.count_nonzero(crowd))
            ids = np.arange(n, dtype=np.int32)
            out["boxes"].append(np.ascontiguousarray(boxes[:k]))
            out["crowd_boxes"].append(np.ascontiguousarray(boxes[k:]))
            out["objects"].append(objects)
            if self.train:
                out["crowd_ids"].append(ids[k:])
                out["object_rows"].append(np.stack([ids, ids, ids + 1], axis=1))
            if self.polygons:
                polygons, vertices = cols["polygons"][i], cols["vertices"][i]
                if len(polygons) and (
                    polygons[:, 0].min() < 0
                    or polygons[:, 0].max() >= n
                    or polygons[:, 1:].min() < 0
                    or polygons[:, 2].max() > len(vertices)
                ):
                    raise ValueError(
                        f"a sample's polygons name objects or vertices it does not have ({n} objects, "
                        f"{len(vertices)} vertices)"
                    )
                if order is not None:
                    polygons = polygons.copy()
                    polygons[:, 0] = np.argsort(order)[polygons[:, 0]]
                bare = np.setdiff1d(ids, polygons[:, 0])
                if len(bare):  # select_masks wants a polygon for every id: an empty one stands in
                    polygons = np.concatenate([polygons, np.stack([bare, 0 * bare, 0 * bare], axis=1)])
                out["polygons"].append(np.ascontiguousarray(polygons, np.int32))
                out["vertices"].append(vertices)
        return out


def _keypoints(objects, flip, anchor, shape):
    """Keypoints n x 17 x 3 after the crop window and the flip: the swapped order when flipped, x mirrored,
    and a keypoint the crop leaves out marked absent (v = 0, at 0, 0), as trainers expect."""
    from nvidia.dali import fn, types

    f = fn.cast(flip, dtype=types.FLOAT)
    x, y, v = (objects[:, 2 + j * K : 2 + (j + 1) * K] for j in range(3))
    sx, sy, sv = (objects[:, 2 + j * K : 2 + (j + 1) * K] for j in range(3, 6))
    x, y, v = x + f * (sx - x), y + f * (sy - y), v + f * (sv - v)
    x, y = (x - anchor[0]) / shape[0], (y - anchor[1]) / shape[1]
    x = x + f * (1.0 - 2.0 * x)
    keep = fn.cast((x >= 0.0) & (x <= 1.0) & (y >= 0.0) & (y <= 1.0) & (v > 0.0), dtype=types.FLOAT)
    return fn.stack(x * keep, y * keep, v * keep, axis=2)


def _normalize(images, look: dict[str, Any], mirror, **crop):
    return normalize(images, **look, mirror=mirror, **crop)


def _outputs(device: str, outs: dict[str, Any]) -> dict[str, Any]:
    """Per-object outputs padded to the batch's largest count, moved next to the images."""
    from nvidia.dali import fn, types

    if "polygons" in outs:
        outs["num_polygons"] = outs["polygons"].shape(dtype=types.INT32)[0]
    pad = {"boxes": 0.0, "labels": -1, "iscrowd": 0, "keypoints": 0.0, "polygons": -1, "vertices": 0.0}
    for name, fill in pad.items():
        if name in outs:
            outs[name] = fn.pad(outs[name], fill_value=fill, axes=[0])
    return {k: (on_device(v, device) if k != "image" else v) for k, v in outs.items()}


def train_graph(*, image_size: int, polygons: bool, keypoints: bool, look: dict[str, Any]):
    """Bbox-aware random crop (non-crowd boxes constrain it; crowd boxes are clipped to it and kept with their
    flag) fused with decoding, horizontal flip of pixels, boxes, polygons and keypoints, resize to S x S."""

    def graph(enc: dict[str, Any], device: str) -> dict[str, Any]:
        from nvidia.dali import fn, types
        from nvidia.dali import math as dmath

        anchor, shape, boxes, kept = fn.random_bbox_crop(
            enc["boxes"],
            device="cpu",
            bbox_layout="xyXY",
            aspect_ratio=[0.5, 2.0],
            thresholds=THRESHOLDS,
            scaling=[0.3, 1.0],
            allow_no_crop=True,
            num_attempts=50,
            output_bbox_indices=True,
        )
        images = fn.decoders.image_slice(enc["jpg"], anchor, shape, device=decoder(device), output_type=types.RGB)
        flip = fn.random.coin_flip(probability=0.5)
        corner, size = fn.cat(anchor, anchor), fn.cat(shape, shape)
        crowd = dmath.clamp((enc["crowd_boxes"] - corner) / size, 0.0, 1.0)
        boxes = fn.bb_flip(fn.cat(boxes, crowd), ltrb=True, horizontal=flip)
        ids = fn.cat(kept, enc["crowd_ids"])
        _, objects = fn.segmentation.select_masks(ids, enc["object_rows"], enc["objects"], reindex_masks=True)
        labels = fn.cast(objects[:, 0], dtype=types.INT32)
        outs = {"image": None, "boxes": boxes, "labels": labels, "iscrowd": fn.cast(objects[:, 1], dtype=types.UINT8)}
        outs["num_boxes"] = labels.shape(dtype=types.INT32)[0]
        if keypoints:
            outs["keypoints"] = _keypoints(objects, flip, anchor, shape)
        if polygons:
            polys, verts = fn.segmentation.select_masks(ids, enc["polygons"], enc["vertices"], reindex_masks=True)
            outs["polygons"] = polys
            outs["vertices"] = fn.coord_flip((verts - anchor) / shape, layout="xy", flip_x=flip, flip_y=0)
        images = fn.resize(images, resize_x=image_size, resize_y=image_size, antialias=True)
        outs["image"] = _normalize(images, look, flip)
        return _outputs(device, outs)

    return graph


def eval_size(height, width, image_size, max_size, ops):
    """The shorter side to image_size, the longer at most max_size, rounded: one formula for the graph (DALI's
    math, `ops` = (min, max, floor)) and the reference (NumPy's, float32 arguments)."""
    lesser, greater, floor = ops
    scale = lesser(image_size / lesser(height, width), max_size / greater(height, width))
    return floor(height * scale + 0.5), floor(width * scale + 0.5)


def eval_graph(*, image_size: int, max_size: int, polygons: bool, keypoints: bool, look: dict[str, Any]):
    """Decode, resize (the shorter side to image_size, the longer at most max_size), pad to max_size x max_size at
    the bottom and right; objects as stored (normalized to the original image; crowd objects last)."""

    def graph(enc: dict[str, Any], device: str) -> dict[str, Any]:
        from nvidia.dali import fn, types
        from nvidia.dali import math as dmath

        hwc = fn.cast(fn.peek_image_shape(enc["jpg"]), dtype=types.FLOAT)
        h, w = hwc[0], hwc[1]
        out_h, out_w = eval_size(h, w, float(image_size), float(max_size), (dmath.min, dmath.max, dmath.floor))
        images = fn.decoders.image(enc["jpg"], device=decoder(device), output_type=types.RGB)
        images = fn.resize(images, resize_x=out_w, resize_y=out_h, antialias=True)
        image = _normalize(
            images,
            look,
            0,
            crop=(max_size, max_size),
            crop_pos_x=0.0,
            crop_pos_y=0.0,
            out_of_bounds_policy="pad",
            fill_values=0.0,
        )
        objects = enc["objects"]
        labels = fn.cast(objects[:, 0], dtype=types.INT32)
        outs = {
            "image": image,
            "boxes": fn.cat(enc["boxes"], enc["crowd_boxes"]),
            "labels": labels,
            "iscrowd": fn.cast(objects[:, 1], dtype=types.UINT8),
            "num_boxes": labels.shape(dtype=types.INT32)[0],
            "size": fn.cast(fn.stack(h, w), dtype=types.INT32),
            "resized": fn.cast(fn.stack(out_h, out_w), dtype=types.INT32),
            "scale": fn.stack(out_h / h, out_w / w),
        }
        if keypoints:
            outs["keypoints"] = fn.stack(*(objects[:, 2 + j * K : 2 + (j + 1) * K] for j in range(3)), axis=2)
        if polygons:
            outs["polygons"], outs["vertices"] = enc["polygons"], enc["vertices"]
        return _outputs(device, outs)

    return graph
