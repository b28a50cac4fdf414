"""`mnist_dali`: MNIST / Fashion-MNIST / KMNIST shards (`python -m pipelines mnist`) -> N x 1 x 28 x 28 batches,
written with the generic loader (`loaders/generic.py`) as a worked example.

    from loaders import mnist_dali
    for batch in mnist_dali("out/train", batch_size=128, device="gpu"):
        batch["image"], batch["label"]   # N x 1 x 28 x 28 float, normalized; N int64

The images are decoded (`png`) or taken as they are (`npy`), then normalized with MNIST's mean and std (0.1307,
0.3081); no augmentation (what MNIST trainers use), in train and eval alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from loaders.core import DaliLoader, class_label
from loaders.generic import Graph, generic_dali, npy_parser, stored_as
from loaders.graphs import check_dtype, decoder, label, normalize, on_device
from loaders.registry import register
from loaders.spec import ReadSpec

if TYPE_CHECKING:
    from loaders.mixture import Mixture

__all__ = ["MNIST_MEAN", "MNIST_STD", "mnist_dali", "reference_eval"]

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def _graph(field: str, mean: float, std: float, dtype: str) -> Graph:
    def graph(encoded: dict[str, Any], device: str) -> dict[str, Any]:
        from nvidia.dali import fn, types

        if field == "png":
            images = fn.decoders.image(encoded["png"], device=decoder(device), output_type=types.GRAY)
        else:  # 28 x 28 uint8 parsed on the host
            images = fn.reshape(encoded["npy"], shape=[28, 28, 1], layout="HWC")
            images = on_device(images, device)
        images = normalize(images, dtype=dtype, mean=[mean], std=[std])
        return {"image": images, "label": label(encoded["cls"], device)}

    parsers = {"cls": class_label} | ({"npy": npy_parser} if field == "npy" else {})
    dtypes = {"npy": "UINT8"} if field == "npy" else {}
    return Graph(graph, ReadSpec(fields=(field, "cls"), host_fields=parsers, host_dtypes=dtypes))


@register
def mnist_dali(
    url: str | Mixture,
    batch_size: int = 128,
    *,
    train: bool = True,
    device: str = "gpu",
    dtype: str = "float32",
    mean: float = MNIST_MEAN,
    std: float = MNIST_STD,
    **options: Any,
) -> DaliLoader:
    """A loader over a split written by `python -m pipelines mnist` (png or npy); `train` changes nothing but is
    taken, as every loader takes it. `options`: seed, rank, world_size, ... (`loaders.spec.LoaderOptions`)."""
    check_dtype(dtype)
    field = stored_as(url, "npy", "png")
    return generic_dali(url, batch_size, graph=_graph(field, mean, std, dtype), device=device, **options)


def reference_eval(sample: dict[str, bytes], *, mean: float = MNIST_MEAN, std: float = MNIST_STD) -> dict[str, Any]:
    """What the graph computes for one sample, in PIL and NumPy (the loader conformance suite compares them)."""
    import io

    from PIL import Image

    if "npy" in sample:
        arr = npy_parser(sample["npy"]).astype(np.float32)
    else:
        with Image.open(io.BytesIO(sample["png"])) as im:
            arr = np.asarray(im.convert("L"), dtype=np.float32)
    return {"image": ((arr - mean * 255) / (std * 255))[None], "label": int(sample["cls"])}
