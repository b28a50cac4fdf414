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

from loaders.core import DaliLoader
from loaders.generic import generic_dali, image_classification
from loaders.graphs import IMAGENET_MEAN, IMAGENET_STD, check_dtype, classification_images
from loaders.registry import register

if TYPE_CHECKING:
    from loaders.mixture import Mixture

__all__ = ["imagenet_dali", "reference_eval", "classification_images", "IMAGENET_MEAN", "IMAGENET_STD"]


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
    **options: Any,
) -> DaliLoader:
    """A loader over an ImageNet split written by `python -m pipelines imagenet` (its folder or manifest URL);
    `options`: seed, rank, world_size, cache_dir, ... (`loaders.spec.LoaderOptions`)."""
    check_dtype(dtype)
    look = dict(mean=mean, std=std, dtype=dtype, channels_last=channels_last)
    graph = image_classification(image_size=image_size, train=train, image="jpg", label="cls", **look)
    return generic_dali(url, batch_size, graph=graph, device=device, **options)


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
