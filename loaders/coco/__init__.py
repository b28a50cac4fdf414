"""`coco_dali`: COCO shards (`python -m pipelines coco`) -> batches for detection, instance segmentation,
keypoints or captioning, decoded and augmented by DALI; every annotation read from the sample's own fields (no
per-rank JSON parse: start-up does not grow with the split).

    from loaders import coco_dali
    loader = coco_dali("s3://bucket/coco/train", batch_size=32, task="instance", device="gpu")
    for batch in loader:
        batch["image"], batch["boxes"], batch["labels"], batch["masks"]

Batch layout (B samples; N, P, V: the batch's largest object, polygon and vertex counts; per-object rows padded):
- image: B x 3 x S x S (train) or B x 3 x M x M (eval: the image resized so its shorter side is `image_size` and
  its longer at most `max_size` = M, at the top left, zero padding after normalization at the bottom and right)
- boxes: B x N x 4 float [x0, y0, x1, y1] normalized (0 padding); labels: B x N int32 (0..79, -1 padding;
  `loader.manifest["category_ids"][label]` is COCO's id); iscrowd: B x N uint8; num_boxes: B int32. Crowd objects
  come after the others in each image.
- keypoints (task="keypoints"): B x N x 17 x 3 float [x, y normalized, v] (v = 0: absent, or outside the crop)
- polygons (task="instance"): B x P x 3 int32 [object index into boxes, first vertex, end vertex) (-1 padding),
  vertices: B x V x 2 float [x, y] normalized (they may reach outside 0..1 after a crop), num_polygons: B int32
  (an object without polygons, such as a crowd's RLE, has one empty polygon: first == end);
  masks (unless masks=False): B x N x H x W bool, each object's polygons filled at the image's output size on the
  output device (`loaders/coco/masks.py`; an object without polygons, such as a crowd RLE, has an empty mask: its
  RLE stays in the sample's `json`)
- eval only: size B x 2 int32 (the original height, width), resized B x 2 int32 (the image's extent inside the
  padded canvas), scale B x 2 float (resized / size): a prediction at canvas pixel (x, y) is at (x / scale[1],
  y / scale[0]) in the original image; boxes stay normalized to the original image
- captions (task="captions"): image as the ImageNet graphs make it (random resized crop + flip, or resize + centre
  crop), captions: a list of B lists of strings; with tokenizer=callable(str) -> list[int], also tokens: B x C x L
  int64 (0 padding) and lengths: B x C int64 (0 for a missing caption)

Train (detection, instance, keypoints): DALI's `random_bbox_crop` (IoU thresholds 0-0.9 over the non-crowd boxes,
scale 0.3-1, aspect 0.5-2, whole image allowed) fused with decoding, boxes whose centre leaves the crop dropped
with their polygons and keypoints (`segmentation.select_masks`), crowd boxes clipped to the crop and kept with
their flag (they never constrain it), a horizontal flip of pixels, boxes, polygons and keypoints (left and right
keypoints swapped), resize to S x S, normalize.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from loaders.coco.graphs import Objects, eval_graph, eval_size, train_graph
from loaders.core import DaliLoader, positive
from loaders.generic import Graph, generic_dali
from loaders.graphs import IMAGENET_MEAN, IMAGENET_STD, check_dtype, classification_images
from loaders.mixture import MissingFields
from loaders.registry import register
from loaders.spec import ReadSpec

if TYPE_CHECKING:
    from loaders.mixture import Mixture

__all__ = ["coco_dali", "reference_eval"]

TASKS = ("detection", "instance", "keypoints", "captions")


def _captions(column: list[Any], device: str) -> list[list[str]]:
    return [[c["caption"] for c in json.loads(bytes(raw))["captions"]] for raw in column]


def _tokens(tokenizer: Callable[[str], Sequence[int]]) -> Callable[[dict[str, Any]], None]:
    def finish(batch: dict[str, Any]) -> None:
        import torch

        ids = [[list(tokenizer(c)) for c in caps] for caps in batch["captions"]]
        most = max((len(c) for c in ids), default=0)
        longest = max((len(t) for c in ids for t in c), default=0)
        tokens = torch.zeros((len(ids), most, longest), dtype=torch.int64)
        lengths = torch.zeros((len(ids), most), dtype=torch.int64)
        for i, caps in enumerate(ids):
            for j, t in enumerate(caps):
                tokens[i, j, : len(t)] = torch.tensor(t, dtype=torch.int64)
                lengths[i, j] = len(t)
        device = batch["image"].device
        batch["tokens"], batch["lengths"] = tokens.to(device), lengths.to(device)

    return finish


def _masks(train: bool, size: tuple[int, int]) -> Callable[[dict[str, Any]], None]:
    def finish(batch: dict[str, Any]) -> None:
        import torch

        from loaders.coco.masks import rasterize

        if train:  # the crop covers the whole S x S image
            scale = torch.full((len(batch["boxes"]), 2), float(size[0]), device=batch["vertices"].device)
        else:  # the resized image, at the top left of the canvas: pixels per unit are its width and height
            scale = batch["resized"].flip(1).to(batch["vertices"].device, torch.float32)
        batch["masks"] = rasterize(batch["polygons"], batch["vertices"], batch["boxes"].shape[1], *size, scale)

    return finish


@register
def coco_dali(
    url: str | Mixture,
    batch_size: int = 32,
    *,
    task: str = "detection",
    train: bool = True,
    image_size: int | None = None,
    max_size: int | None = None,
    masks: bool = True,
    tokenizer: Callable[[str], Sequence[int]] | None = None,
    device: str = "gpu",
    dtype: str = "float32",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    channels_last: bool = False,
    **options: Any,
) -> DaliLoader:
    """A loader over a COCO split written by `python -m pipelines coco` (its folder or manifest URL);
    `options`: seed, rank, world_size, cache_dir, ... (`loaders.spec.LoaderOptions`).

    image_size: the square output side in training (default 512), the shorter side in eval (default 512; the
    longer side at most max_size, default image_size * 1333 // 800, the canvas side); 224 for captions."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}, not {task!r}")
    check_dtype(dtype)
    for name, value in (("image_size", image_size), ("max_size", max_size)):
        if value is not None:
            positive(name, value)
    look = dict(mean=mean, std=std, dtype=dtype, channels_last=channels_last)
    if task == "captions":
        size = image_size or 224

        def graph(enc: dict[str, Any], device: str) -> dict[str, Any]:
            return {"image": classification_images(enc["jpg"], device, train=train, image_size=size, **look)}

        read = ReadSpec(
            fields=("jpg", "json"),
            tensor_fields={"captions": ("json", _captions)},
            finish=_tokens(tokenizer) if tokenizer else None,
        )
        loader = generic_dali(url, batch_size, graph=Graph(graph, read), device=device, **options)
        _require_captions(loader.split_url, loader.manifest)
        return loader
    size = image_size or 512
    canvas = max_size or size * 1333 // 800
    if not train and canvas < size:
        raise ValueError(f"max_size={canvas} is smaller than image_size={size}")
    objects = Objects(train=train, polygons=task == "instance", keypoints=task == "keypoints")
    shape = dict(polygons=objects.polygons, keypoints=objects.keypoints, look=look)
    graph = train_graph(image_size=size, **shape) if train else eval_graph(image_size=size, max_size=canvas, **shape)
    side = size if train else canvas
    read = ReadSpec(
        fields=objects.fields,
        host_fields=objects.parsers,
        host_dtypes=objects.host_dtypes,
        prepare=objects.prepare,
        inputs=objects.inputs,
        finish=_masks(train, (side, side)) if objects.polygons and masks else None,
    )
    try:
        return generic_dali(url, batch_size, graph=Graph(graph, read), device=device, **options)
    except MissingFields as e:
        needs = "person_keypoints" if task == "keypoints" else "instances"
        raise MissingFields(f"{e}: task={task!r} needs them (its job saw no {needs}_*.json)") from None


def _require_captions(url: str, manifest: dict[str, Any]) -> None:
    """task="captions" over a split whose job saw no captions JSON would yield empty lists: refuse it, as the
    keypoints task refuses a split without keypoints (the manifest's `annotations`: the JSON kinds its job read)."""
    if "annotations" in manifest and "captions" not in manifest["annotations"]:
        raise ValueError(
            f"{url}: task='captions' needs captions, and its job saw no captions_*.json "
            f"(it read {manifest['annotations']})"
        )


def reference_eval(
    sample: dict[str, bytes],
    *,
    image_size: int = 512,
    max_size: int | None = None,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
):
    """What the detection eval graph computes for one sample, in PIL and NumPy (the loader conformance suite
    compares them): the image resized and padded onto the canvas, normalized, CHW; its sizes and scale; the
    number of objects."""
    import io

    from PIL import Image

    canvas = max_size or image_size * 1333 // 800
    with Image.open(io.BytesIO(sample["jpg"])) as im:
        h, w = np.float32(im.height), np.float32(im.width)
        out_h, out_w = eval_size(h, w, np.float32(image_size), np.float32(canvas), (np.minimum, np.maximum, np.floor))
        im = im.convert("RGB").resize((int(out_w), int(out_h)), Image.BILINEAR, reducing_gap=None)
        arr = np.asarray(im, dtype=np.float32)
    arr = (arr - np.array(mean, np.float32) * 255) / (np.array(std, np.float32) * 255)
    image = np.zeros((canvas, canvas, 3), np.float32)
    image[: arr.shape[0], : arr.shape[1]] = arr
    return {
        "image": image.transpose(2, 0, 1),
        "num_boxes": len(sample["labels"]) // 4,
        "size": np.array([h, w], np.int32),
        "resized": np.array([out_h, out_w], np.int32),
        "scale": np.array([out_h / h, out_w / w], np.float32),
    }
