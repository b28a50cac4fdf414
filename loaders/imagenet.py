"""`imagenet_dali`: ImageNet shards -> normalized image batches and int64 labels, decoded and augmented by DALI.

    from loaders import imagenet_dali
    loader = imagenet_dali("s3://bucket/imagenet/train", batch_size=256, train=True, device="gpu")
    for batch in loader:        # {"image": N x 3 x 224 x 224 float on the GPU, "label": int64 N}
        ...

Train graph: fused decode + random-resized-crop (scale 0.08-1, ratio 3/4-4/3), resize, random flip, normalize.
Eval graph: decode, resize the shorter side to image_size / 0.875, centre crop, normalize. `device="gpu"` decodes
with DALI's mixed decoder (nvJPEG and the hardware JPEG engines); `device="cpu"` runs the same graph on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from loaders.core import DaliLoader, LoaderOptions, class_label, positive
from loaders.registry import register

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+; annotations are strings here
    from typing import Unpack

    from loaders.mixture import Mixture

__all__ = ["imagenet_dali", "reference_eval", "classification_images", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def classification_images(
    jpegs, device: str, *, train: bool, image_size: int, mean, std, dtype: str, channels_last: bool
):
    """The image half of the classification graph (shared with Open Images' classification task)."""
    from nvidia.dali import fn, types

    decoder = "mixed" if device == "gpu" else "cpu"
    if train:
        images = fn.decoders.image_random_crop(
            jpegs,
            device=decoder,
            output_type=types.RGB,
            random_area=[0.08, 1.0],
            random_aspect_ratio=[3 / 4, 4 / 3],
            num_attempts=100,
        )
        images = fn.resize(images, resize_x=image_size, resize_y=image_size, antialias=True)
        mirror = fn.random.coin_flip(probability=0.5)
        crop = None
    else:
        images = fn.decoders.image(jpegs, device=decoder, output_type=types.RGB)
        images = fn.resize(images, resize_shorter=round(image_size / 0.875), antialias=True)
        mirror = 0
        crop = (image_size, image_size)
    return fn.crop_mirror_normalize(
        images,
        dtype=types.FLOAT16 if dtype == "float16" else types.FLOAT,
        output_layout="HWC" if channels_last else "CHW",
        crop=crop,
        mean=[m * 255 for m in mean],
        std=[s * 255 for s in std],
        mirror=mirror,
    )


def _graph(*, train: bool, image_size: int, mean, std, dtype: str, channels_last: bool):
    def graph(encoded: dict[str, Any], device: str) -> dict[str, Any]:
        from nvidia.dali import fn

        images = classification_images(
            encoded["jpg"],
            device,
            train=train,
            image_size=image_size,
            mean=mean,
            std=std,
            dtype=dtype,
            channels_last=channels_last,
        )
        labels = fn.reshape(encoded["cls"], shape=[])  # int64, parsed on the host (see `host_fields`)
        return {"image": images, "label": labels.gpu() if device == "gpu" else labels}

    return graph


@register
def imagenet_dali(
    url: str | Mixture,
    batch_size: int = 256,
    *,
    train: bool = True,
    image_size: int = 224,
    device: str = "gpu",
    dtype: str = "float32",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    channels_last: bool = False,
    **options: Unpack[LoaderOptions],
) -> DaliLoader:
    """A loader over an ImageNet split written by `python -m pipelines imagenet` (its folder or manifest URL);
    `options`: seed, rank, world_size, cache_dir, ... (`loaders.core.LoaderOptions`)."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', not {dtype!r}")
    positive("image_size", image_size)
    graph = _graph(train=train, image_size=image_size, mean=mean, std=std, dtype=dtype, channels_last=channels_last)
    return DaliLoader(
        url,
        graph=graph,
        fields=("jpg", "cls"),
        host_fields={"cls": class_label},
        batch_size=batch_size,
        device=device,
        **options,
    )


def reference_eval(
    sample: dict[str, bytes], *, image_size: int = 224, mean=IMAGENET_MEAN, std=IMAGENET_STD
) -> dict[str, Any]:
    """What the eval graph computes for one sample, in PIL and numpy: the loader conformance suite compares
    DALI's output with it (decode, shorter side to image_size / 0.875, centre crop, normalize, CHW)."""
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(sample["jpg"])) as im:
        im = im.convert("RGB")
        short = round(image_size / 0.875)
        w, h = im.size
        scale = short / min(w, h)
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR, reducing_gap=None)
        # DALI centres a crop at 0.5 * (size - crop), rounded half up
        x0, y0 = int((im.width - image_size) * 0.5 + 0.5), int((im.height - image_size) * 0.5 + 0.5)
        arr = np.asarray(im, dtype=np.float32)[y0 : y0 + image_size, x0 : x0 + image_size]
    arr = (arr - np.array(mean, np.float32) * 255) / (np.array(std, np.float32) * 255)
    return {"image": arr.transpose(2, 0, 1), "label": int(sample["cls"])}
