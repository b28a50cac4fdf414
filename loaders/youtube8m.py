"""`youtube8m_dali`: YouTube-8M Arrow shards -> feature batches and multi-hot labels, on the GPU or the CPU.

    from loaders import youtube8m_dali
    loader = youtube8m_dali("s3://bucket/yt8m/train", batch_size=1024, level="video", device="gpu")
    for batch in loader:   # rgb N x 1024, audio N x 128 (float32), labels N x 3862 (multi-hot float32)
        ...
    loader = youtube8m_dali(url, batch_size=64, level="frame", max_frames=300, frame_sampling="random")
    for batch in loader:   # rgb N x 300 x 1024, audio N x 300 x 128 (dequantized, zero-padded), num_frames N, labels

Frame level: the shards keep the quantized bytes; DALI dequantizes (`x * 4/255 + 4/512 - 2`), keeps at most
`max_frames` frames — the first ones, or with `frame_sampling="random"` a random window (DALI's RNG, so it is
part of the checkpoint and resumes exactly) — and pads to `max_frames`; `num_frames` is the count kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from loaders.core import DaliLoader, multi_hot
from loaders.generic import Graph, generic_dali
from loaders.graphs import on_device
from loaders.registry import register
from loaders.spec import ReadSpec

if TYPE_CHECKING:
    from loaders.mixture import Mixture

__all__ = ["youtube8m_dali", "reference_eval", "dequantize"]

RGB, AUDIO = 1024, 128


def dequantize(q: np.ndarray) -> np.ndarray:
    """YouTube-8M's quantized features back to floats: x * 4/255 + 4/512 - 2 (in float32)."""
    return q.astype(np.float32) * np.float32(4 / 255) + np.float32(4 / 512 - 2)


def _graph(level: str, max_frames: int, sampling: str):
    def graph(encoded: dict[str, Any], device: str) -> dict[str, Any]:
        from nvidia.dali import fn, types
        from nvidia.dali import math as dmath

        def on(x: Any) -> Any:
            return on_device(x, device)

        if level == "video":  # labels: made by torch on the device (`multi_hot`), not by DALI
            return {"rgb": on(encoded["mean_rgb"]), "audio": on(encoded["mean_audio"])}
        rgb, audio = encoded["rgb"], encoded["audio"]
        frames = fn.cast(rgb.shape(dtype=types.INT32)[0], dtype=types.FLOAT)
        if sampling == "random":
            room = dmath.max(frames - float(max_frames), 0.0)
            start = fn.cast(dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * room), dtype=types.INT32)
        else:
            start = fn.cast(frames * 0.0, dtype=types.INT32)
        out = {}
        for name, x in (("rgb", rgb), ("audio", audio)):
            x = fn.slice(on(x), start=start, shape=[max_frames], axes=[0], out_of_bounds_policy="trim_to_shape")
            kept = fn.cast(x.shape(dtype=types.INT32)[0], dtype=types.INT32)
            x = x * (4 / 255) + (4 / 512 - 2)  # uint8 in, float32 out: one fused pass, no separate cast
            out[name] = fn.pad(x, fill_value=0.0, axes=[0], shape=[max_frames])
        out["num_frames"] = on(kept)
        return out

    return graph


@register
def youtube8m_dali(
    url: str | Mixture,
    batch_size: int = 256,
    *,
    level: str | None = None,
    max_frames: int = 300,
    frame_sampling: str = "first",
    train: bool = True,
    device: str = "gpu",
    **options: Any,
) -> DaliLoader:
    """A loader over a YouTube-8M split written by `python -m pipelines youtube8m` (its folder or manifest URL);
    `options`: seed, rank, world_size, cache_dir, ... (`loaders.spec.LoaderOptions`).

    `level` must match the split's (default: the split's own); `train` is accepted for symmetry with the other
    loaders (features have no augmentation)."""
    if frame_sampling not in ("first", "random"):
        raise ValueError(f"frame_sampling must be 'first' or 'random', not {frame_sampling!r}")
    from loaders.mixture import first_url
    from shards.manifest import read_manifest, split_url_of

    manifest = read_manifest(split_url_of(first_url(url)))
    level = level or manifest.get("level")
    if level != manifest.get("level"):
        raise ValueError(f"{url} holds {manifest.get('level')}-level features, not {level}-level")
    num_classes = manifest["num_classes"]

    fields = {
        "video": {"mean_rgb": (None, "FLOAT"), "mean_audio": (None, "FLOAT")},
        "frame": {"rgb": (lambda q: q.reshape(-1, RGB), "UINT8"), "audio": (lambda q: q.reshape(-1, AUDIO), "UINT8")},
    }
    parsers = {k: p for k, (p, _) in fields[level].items()}  # None: the column's 2-D array as it is
    read = ReadSpec(
        fields=(*fields[level], "labels"),
        host_fields=parsers,
        host_dtypes={k: t for k, (_, t) in fields[level].items()},
        tensor_fields={"labels": ("labels", lambda labels, device: multi_hot(labels, num_classes, device))},
    )
    graph = Graph(_graph(level, max_frames, frame_sampling), read)
    return generic_dali(url, batch_size, graph=graph, device=device, **options)


def reference_eval(sample: dict[str, Any], *, level: str = "video", max_frames: int = 300) -> dict[str, Any]:
    """What the loader gives for one Arrow row (a dict of Python values), in NumPy: the conformance suite's
    reference."""
    hot = np.zeros(3862, np.float32)
    hot[sample["labels"]] = 1.0
    if level == "video":
        return {
            "rgb": np.asarray(sample["mean_rgb"], np.float32),
            "audio": np.asarray(sample["mean_audio"], np.float32),
            "labels": hot,
        }
    out: dict[str, Any] = {"labels": hot}
    for name, width in (("rgb", RGB), ("audio", AUDIO)):
        q = np.frombuffer(sample[name], np.uint8).reshape(-1, width)[:max_frames]
        padded = np.zeros((max_frames, width), np.float32)
        padded[: len(q)] = dequantize(q)
        out[name] = padded
    out["num_frames"] = min(sample["num_frames"], max_frames)
    return out
