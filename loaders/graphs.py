"""Pieces of DALI graphs that the dataset loaders share: where a node lives, the image decoder, the normalizing
step, a label, and ImageNet's classification image graph (used by ImageNet, Open Images' and COCO's captions
task, and `generic_dali`'s `image_classification`). Each function builds nodes inside a graph function."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "check_dtype",
    "classification_images",
    "decoder",
    "label",
    "normalize",
    "on_device",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_dtype(dtype: str) -> None:
    """The image dtypes every image loader offers."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', not {dtype!r}")


def on_device(node: Any, device: str) -> Any:
    """A node on the output device: moved to the GPU with device="gpu" (DALI's `.gpu()`), else as it is."""
    return node.gpu() if device == "gpu" else node


def decoder(device: str) -> str:
    """DALI's image decoder backend: "mixed" (nvJPEG and the hardware JPEG engines) on the GPU, else "cpu"."""
    return "mixed" if device == "gpu" else "cpu"


def label(encoded: Any, device: str) -> Any:
    """A per-sample scalar label (int64, parsed on the host) as an output on the device."""
    from nvidia.dali import fn

    return on_device(fn.reshape(encoded, shape=[]), device)


def normalize(
    images: Any,
    *,
    dtype: str,
    mean: Sequence[float],
    std: Sequence[float],
    channels_last: bool = False,
    mirror: Any = 0,
    **crop: Any,
) -> Any:
    """Mirror and normalize by mean and std given in [0, 1] units, to `dtype` in CHW (or HWC); `crop`: DALI's
    crop arguments of `crop_mirror_normalize` (crop, crop_pos_x, out_of_bounds_policy, ...)."""
    from nvidia.dali import fn, types

    return fn.crop_mirror_normalize(
        images,
        dtype=types.FLOAT16 if dtype == "float16" else types.FLOAT,
        output_layout="HWC" if channels_last else "CHW",
        mean=[m * 255 for m in mean],
        std=[s * 255 for s in std],
        mirror=mirror,
        **crop,
    )


def classification_images(
    jpegs: Any, device: str, *, train: bool, image_size: int, mean, std, dtype: str, channels_last: bool
) -> Any:
    """ImageNet's image graph. Train: fused decode + random-resized-crop (scale 0.08-1, ratio 3/4-4/3), resize,
    random flip, normalize. Eval: decode, resize the shorter side to image_size / 0.875, centre crop, normalize."""
    from nvidia.dali import fn, types

    if train:
        images = fn.decoders.image_random_crop(
            jpegs,
            device=decoder(device),
            output_type=types.RGB,
            random_area=[0.08, 1.0],
            random_aspect_ratio=[3 / 4, 4 / 3],
            num_attempts=100,
        )
        images = fn.resize(images, resize_x=image_size, resize_y=image_size, antialias=True)
        mirror = fn.random.coin_flip(probability=0.5)
        crop = None
    else:
        images = fn.decoders.image(jpegs, device=decoder(device), output_type=types.RGB)
        images = fn.resize(images, resize_shorter=round(image_size / 0.875), antialias=True)
        mirror = 0
        crop = (image_size, image_size)
    return normalize(images, dtype=dtype, mean=mean, std=std, channels_last=channels_last, crop=crop, mirror=mirror)
