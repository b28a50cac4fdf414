"""`openimages_dali`: Open Images shards -> image batches with boxes (detection) or multi-hot targets
(classification), decoded and augmented by DALI.

    from loaders import openimages_dali
    loader = openimages_dali("s3://bucket/openimages/train", batch_size=64, task="detection", device="gpu")
    for batch in loader:   # image N x 3 x S x S; boxes N x M x 4 (normalized xmin, ymin, xmax, ymax, zero-padded);
        ...                # labels N x M (int32, -1 padding); num_boxes N

Detection, train: DALI's bbox-aware random crop (`random_bbox_crop`: IoU thresholds 0-0.9, scale 0.3-1, aspect
0.5-2, whole image allowed) fused with decoding (`decoders.image_slice`), horizontal flip of pixels and boxes
together, resize to S x S, normalize. Eval: decode, resize to S x S, normalize; boxes as stored (normalized
coordinates do not change with a resize). Classification: the ImageNet train/eval graphs, and `target`, a
float multi-hot vector over the split's classes (its human-verified positive labels). Boxes and labels are read
from the shards' numeric fields, never from JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from loaders.core import DaliLoader, multi_hot, positive
from loaders.generic import Graph, generic_dali
from loaders.graphs import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_dtype,
    classification_images,
    decoder,
    normalize,
    on_device,
)
from loaders.mixture import first_url
from loaders.reading import Ragged
from loaders.registry import register
from loaders.spec import ReadSpec
from shards.manifest import read_manifest, split_url_of

if TYPE_CHECKING:
    from loaders.mixture import Mixture

__all__ = ["openimages_dali", "reference_eval"]


def _detection_graph(*, train: bool, image_size: int, mean, std, dtype: str, channels_last: bool):
    def graph(encoded: dict[str, Any], device: str) -> dict[str, Any]:
        from nvidia.dali import fn, types

        boxes, labels = encoded["boxes"], encoded["labels"]
        if train:
            begin, size, boxes, labels = fn.random_bbox_crop(
                boxes,
                labels,
                device="cpu",
                bbox_layout="xyXY",
                aspect_ratio=[0.5, 2.0],
                thresholds=[0.0, 0.1, 0.3, 0.5, 0.7, 0.9],
                scaling=[0.3, 1.0],
                allow_no_crop=True,
                num_attempts=50,
            )
            images = fn.decoders.image_slice(encoded["jpg"], begin, size, device=decoder(device), output_type=types.RGB)
            flip = fn.random.coin_flip(probability=0.5)
            boxes = fn.bb_flip(boxes, ltrb=True, horizontal=flip)
        else:
            images = fn.decoders.image(encoded["jpg"], device=decoder(device), output_type=types.RGB)
            flip = 0
        images = fn.resize(images, resize_x=image_size, resize_y=image_size, antialias=True)
        images = normalize(images, dtype=dtype, mean=mean, std=std, channels_last=channels_last, mirror=flip)
        count = fn.reshape(labels.shape(dtype=types.INT32), shape=[])
        boxes = fn.pad(boxes, fill_value=0.0, axes=[0])
        labels = fn.pad(labels, fill_value=-1, axes=[0])
        outs = {"image": images, "boxes": boxes, "labels": labels, "num_boxes": count}
        return {k: (on_device(v, device) if k != "image" else v) for k, v in outs.items()}

    return Graph(
        graph,
        ReadSpec(
            fields=("jpg", "boxes", "labels"),
            host_fields={"boxes": _floats, "labels": _ints},
            host_dtypes={"boxes": "FLOAT", "labels": "INT32"},
        ),
    )


def _floats(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<f4").reshape(-1, 4).copy()


def _ints(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<i4").copy()


@register
def openimages_dali(
    url: str | Mixture,
    batch_size: int = 64,
    *,
    task: str = "detection",
    train: bool = True,
    image_size: int | None = None,
    device: str = "gpu",
    dtype: str = "float32",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    channels_last: bool = False,
    **options: Any,
) -> DaliLoader:
    """A loader over an Open Images split written by `python -m pipelines openimages` (its folder or manifest URL);
    `options`: seed, rank, world_size, cache_dir, ... (`loaders.spec.LoaderOptions`).

    image_size defaults to 512 for detection and 224 for classification."""
    if task not in ("detection", "classification"):
        raise ValueError(f"task must be 'detection' or 'classification', not {task!r}")
    check_dtype(dtype)
    if image_size is not None:
        positive("image_size", image_size)
    look = dict(mean=mean, std=std, dtype=dtype, channels_last=channels_last)
    if task == "detection":
        graph = _detection_graph(train=train, image_size=image_size or 512, **look)
        return generic_dali(url, batch_size, graph=graph, device=device, **options)
    num_classes = len(read_manifest(split_url_of(first_url(url)))["classes"])

    def targets(column: list[bytes], device: str):
        """The multi-hot of the human-verified labels, made on the output device (`loaders.core.multi_hot`)."""
        return multi_hot(Ragged.of_buffers(column, "<i4"), num_classes, device)

    def images(encoded: dict[str, Any], device: str) -> dict[str, Any]:
        return {
            "image": classification_images(encoded["jpg"], device, train=train, image_size=image_size or 224, **look)
        }

    read = ReadSpec(fields=("jpg", "imagelabels"), tensor_fields={"target": ("imagelabels", targets)})
    return generic_dali(url, batch_size, graph=Graph(images, read), device=device, **options)


def reference_eval(sample: dict[str, bytes], *, image_size: int = 512, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """What the detection eval graph computes for one sample, in PIL and numpy (the loader conformance suite
    compares them): decode, resize to image_size x image_size, normalize, CHW; and the number of boxes."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(sample["jpg"])) as im:
        im = im.convert("RGB").resize((image_size, image_size), Image.BILINEAR, reducing_gap=None)
        arr = np.asarray(im, dtype=np.float32)
    arr = (arr - np.array(mean, np.float32) * 255) / (np.array(std, np.float32) * 255)
    return {"image": arr.transpose(2, 0, 1), "num_boxes": len(sample["labels"]) // 4}
