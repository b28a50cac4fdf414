"""`generic_dali`: a loader over any split (your own, from `pipelines.convert`), with a graph you write or a ready one.

    from loaders import generic_dali, image_classification, raw_tensors

    loader = generic_dali("out/train", batch_size=64, graph=image_classification(image_size=128))
    loader = generic_dali("out/train", batch_size=64, graph=raw_tensors())         # npy fields -> tensors

    def graph(encoded, device):                     # your own: encoded fields (DALI DataNodes) -> named outputs
        from nvidia.dali import fn, types
        images = fn.decoders.image(encoded["png"], device="mixed" if device == "gpu" else "cpu")
        return {"image": fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW")}
    loader = generic_dali("out/train", batch_size=64, graph=graph, fields=["png"])

The dataset loaders are exactly this with their own graph: same plan, ranks, resume, verification, cache. A graph
is a function `graph(encoded, device) -> {name: DataNode}`; `encoded[field]` is the field's bytes (uint8), or its
parsed array for fields given in `parsers`. A ready graph carries the fields and parsers it needs.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from loaders.core import DaliLoader, class_label, positive
from loaders.graphs import classification_images, on_device
from loaders.graphs import label as label_of
from loaders.spec import LoaderOptions, ReadSpec

if TYPE_CHECKING:
    from loaders.mixture import Mixture

__all__ = ["Graph", "generic_dali", "image_classification", "npy_parser", "raw_tensors", "stored_as"]

DALI_TYPES = {
    "uint8": "UINT8",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "float16": "FLOAT16",
    "float32": "FLOAT",
    "float64": "FLOAT64",
    "bool": "BOOL",
}


@dataclasses.dataclass(frozen=True)
class Graph:
    """A ready graph: the function and what it reads (a `ReadSpec`: fields, host parsers and their DALI types,
    outputs made beside DALI). How every loader is built: `generic_dali(url, graph=Graph(fn, ReadSpec(...)))`."""

    fn: Callable[[dict[str, Any], str], dict[str, Any]]
    read: ReadSpec
    resolve: Callable[[Any], Graph] | None = None  # made when the split is known (from its first sample)

    def __call__(self, encoded: dict[str, Any], device: str) -> dict[str, Any]:
        return self.fn(encoded, device)


def npy_parser(data) -> np.ndarray:
    """A `.npy` field's array (no pickles), as a host parser."""
    return np.load(io.BytesIO(bytes(data)), allow_pickle=False)


def image_classification(
    *,
    image_size: int = 224,
    train: bool = True,
    image: str = "jpg",
    label: str = "cls",
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    dtype: str = "float32",
    channels_last: bool = False,
) -> Graph:
    """ImageNet's graphs (random resized crop + flip, or resize + centre crop) at `image_size`, on an image field
    (any format DALI decodes) and an integer label field: outputs `image` and `label`."""
    positive("image_size", image_size)

    def graph(encoded: dict[str, Any], device: str) -> dict[str, Any]:
        images = classification_images(
            encoded[image],
            device,
            train=train,
            image_size=image_size,
            mean=mean,
            std=std,
            dtype=dtype,
            channels_last=channels_last,
        )
        return {"image": images, "label": label_of(encoded[label], device)}

    return Graph(graph, ReadSpec(fields=(image, label), host_fields={label: class_label}))


def raw_tensors(fields: dict[str, str] | None = None) -> Graph:
    """Tensors with no decoding, outputs named by field: each `.npy` field of a tar split, each numeric or
    fixed-size-list column of an Arrow split (or the fields named in `fields`, {field: dtype}), read on the host
    and handed over as they are. Without `fields`, they and their dtypes come from the split when the loader
    opens (a tar split's first sample, an Arrow split's schema)."""
    if fields is None:
        return Graph(
            lambda encoded, device: {}, ReadSpec(fields=()), resolve=lambda url: raw_tensors(_tensor_fields(url))
        )

    def graph(encoded: dict[str, Any], device: str) -> dict[str, Any]:
        return {name: on_device(encoded[name], device) for name in fields}

    parsers: dict[str, Any] = {}
    dtypes: dict[str, str] = {}
    for f, t in fields.items():
        kind, _, dtype = t.rpartition(":")  # "" (.npy), "arrow" (a 2-D column as it is), "arrow-scalar"
        dtypes[f] = DALI_TYPES[dtype]
        parsers[f] = {"": npy_parser, "arrow": None, "arrow-scalar": functools.partial(np.asarray, dtype=dtype)}[kind]
    return Graph(graph, ReadSpec(fields=tuple(fields), host_fields=parsers, host_dtypes=dtypes))


ARROW_TYPES = {
    "double": "float64",
    "float": "float32",
    "halffloat": "float16",
    "int64": "int64",
    "int32": "int32",
    "int16": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "uint16": "uint16",
    "uint32": "uint32",
    "bool": "bool",
}


def stored_as(url: str | Mixture, *choices: str) -> str:
    """Which of `choices` (fields holding the same thing in other encodings: "npy", "png") the split stores."""
    from loaders.mixture import first_url
    from shards.manifest import read_manifest, split_url_of

    fields = read_manifest(split_url_of(first_url(url)))["fields"]
    return next((c for c in choices if c in fields), choices[-1])


def _tensor_fields(url: str | Mixture) -> dict[str, str]:
    """{field: dtype} of what raw_tensors hands over (Arrow: prefixed "arrow:" or "arrow-scalar:")."""
    from loaders.mixture import first_url
    from shards.browse import find_sample
    from shards.manifest import read_manifest, split_url_of

    first = first_url(url)
    manifest = read_manifest(split_url_of(first))
    if not manifest["shards"][0]["path"].endswith(".arrow"):
        _, sample, _ = find_sample(first)
        return {f: str(npy_parser(v).dtype) for f, v in sample.items() if f.endswith("npy")}
    out = {}
    for name, kind in manifest["fields"].items():
        if kind in ARROW_TYPES:
            out[name] = f"arrow-scalar:{ARROW_TYPES[kind]}"
        elif kind.startswith("fixed_size_list<") and kind.split(": ", 1)[-1].split(">")[0] in ARROW_TYPES:
            out[name] = f"arrow:{ARROW_TYPES[kind.split(': ', 1)[-1].split('>')[0]]}"
    return out


def generic_dali(
    url: str | Mixture,
    batch_size: int = 64,
    *,
    graph: Graph | Callable[..., Any],
    fields: Sequence[str] | None = None,
    parsers: dict[str, Callable[[Any], np.ndarray]] | None = None,
    dtypes: dict[str, str] | None = None,
    device: str = "gpu",
    **options: Any,
) -> DaliLoader:
    """A loader over any split. `graph`: a ready one (`image_classification(...)`, `raw_tensors(...)`) or your
    function with the `fields` it reads; `parsers` turn a field's bytes into an array on the host (DALI type in
    `dtypes`, e.g. {"cls": "INT64"}). `options`: seed, rank, world_size, cache_dir, ... (`LoaderOptions`)."""
    if isinstance(graph, Graph) and graph.resolve is not None:
        graph = graph.resolve(url)
    read = graph.read if isinstance(graph, Graph) else ReadSpec(fields=())
    read = dataclasses.replace(
        read,
        fields=tuple(fields or read.fields),
        host_fields={**read.host_fields, **(parsers or {})},
        host_dtypes={**read.host_dtypes, **(dtypes or {})},
    )
    if not read.fields:
        raise ValueError("give the fields your graph reads: generic_dali(url, graph=fn, fields=['jpg', 'cls'])")
    fn = graph.fn if isinstance(graph, Graph) else graph
    return DaliLoader(url, graph=fn, read=read, batch_size=batch_size, device=device, options=LoaderOptions(**options))
