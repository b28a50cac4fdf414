"""`cifar10_dali`: CIFAR-10 shards (`python -m pipelines cifar10`) -> N x 3 x 32 x 32 batches with the standard
CIFAR augmentation, written with the generic loader (`loaders/generic.py`) as a worked example.

    from loaders import cifar10_dali
    for batch in cifar10_dali("out/train", batch_size=128, device="gpu"):
        batch["image"], batch["label"]

Train: decode (a `png` split; an `npy` split has nothing to decode), a 32 x 32 crop at a random offset of -4..4 pixels on each axis with zero (black) padding (what
`RandomCrop(32, padding=4)` does), horizontal flip with p = 0.5, normalize with CIFAR-10's per-channel mean and
std. Eval: decode, normalize.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from loaders.core import DaliLoader, class_label
from loaders.generic import Graph, generic_dali, npy_parser, stored_as
from loaders.graphs import check_dtype, decoder, label, normalize, on_device
from loaders.registry import register
from loaders.spec import ReadSpec

if TYPE_CHECKING:
    from loaders.mixture import Mixture

__all__ = ["CIFAR_MEAN", "CIFAR_STD", "cifar10_dali", "reference_eval"]

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _graph(field: str, train: bool, mean, std, dtype: str, channels_last: bool) -> Graph:
    def graph(encoded: dict[str, Any], device: str) -> dict[str, Any]:
        from nvidia.dali import fn, types

        if field == "png":
            images = fn.decoders.image(encoded["png"], device=decoder(device), output_type=types.RGB)
        else:  # 32 x 32 x 3 uint8 parsed on the host: nothing to decode
            images = fn.reshape(encoded["npy"], layout="HWC")
            images = on_device(images, device)
        mirror = 0
        if train:
            shift = fn.cast(fn.random.uniform(values=[float(v) for v in range(-4, 5)], shape=[2]), dtype=types.INT32)
            images = fn.slice(
                images, start=shift, shape=[32, 32], axes=[0, 1], out_of_bounds_policy="pad", fill_values=0
            )
            mirror = fn.random.coin_flip(probability=0.5)
        images = normalize(images, dtype=dtype, mean=mean, std=std, channels_last=channels_last, mirror=mirror)
        return {"image": images, "label": label(encoded["cls"], device)}

    parsers = {"cls": class_label} | ({"npy": npy_parser} if field == "npy" else {})
    dtypes = {"npy": "UINT8"} if field == "npy" else {}
    return Graph(graph, ReadSpec(fields=(field, "cls"), host_fields=parsers, host_dtypes=dtypes))


@register
def cifar10_dali(
    url: str | Mixture,
    batch_size: int = 128,
    *,
    train: bool = True,
    device: str = "gpu",
    dtype: str = "float32",
    mean: Sequence[float] = CIFAR_MEAN,
    std: Sequence[float] = CIFAR_STD,
    channels_last: bool = False,
    **options: Any,
) -> DaliLoader:
    """A loader over a split written by `python -m pipelines cifar10`. `options`: seed, rank, world_size, ...
    (`loaders.spec.LoaderOptions`)."""
    check_dtype(dtype)
    field = stored_as(url, "npy", "png")
    return generic_dali(
        url, batch_size, graph=_graph(field, train, mean, std, dtype, channels_last), device=device, **options
    )


def reference_eval(sample: dict[str, bytes], *, mean=CIFAR_MEAN, std=CIFAR_STD) -> dict[str, Any]:
    """What the eval graph computes for one sample, in PIL and NumPy (the loader conformance suite compares them)."""
    import io

    from PIL import Image

    if "npy" in sample:
        arr = npy_parser(sample["npy"]).astype(np.float32)
    else:
        with Image.open(io.BytesIO(sample["png"])) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32)
    arr = (arr - np.array(mean, np.float32) * 255) / (np.array(std, np.float32) * 255)
    return {"image": arr.transpose(2, 0, 1), "label": int(sample["cls"])}
