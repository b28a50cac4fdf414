"""Checks a loader makes before it reads anything: a GPU where one is asked for, and one generation for all ranks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shards.generations import generation_of
from shards.manifest import split_url_of

__all__ = ["refuse_unpinned", "require_gpu"]


def require_gpu() -> None:
    """device="gpu" on a machine without CUDA failed only at the first batch, with DALI's assertion about
    dlopen(libcuda.so); say it up front, in one sentence."""
    import torch

    if not torch.cuda.is_available():
        raise ValueError(
            'device="gpu" but no GPU was found (torch.cuda.is_available() is False: no CUDA device or driver, or a '
            'CPU build of PyTorch); use device="cpu" to run the same graph on the CPU'
        )


def refuse_unpinned(specs: Sequence[Any], manifests: Sequence[Any], rank: int, world_size: int) -> None:
    """Ranks that cannot agree on a generation must not each take the newest they see: a publication (or a
    compaction) between two ranks' start would make them read different sample sets - some samples twice, some
    never, silently. A split written once (version 1) has one generation and needs no pin."""
    for spec, m in zip(specs, manifests, strict=True):
        if m is not None and m["version"] >= 2:
            raise ValueError(
                f"{split_url_of(spec.url)} grows by generations (newest: {generation_of(m)}) and rank {rank} of "
                f"{world_size} is not joined by torch.distributed, so the ranks could read different generations: "
                f"pass generation={generation_of(m)} to every rank (or initialise torch.distributed first)"
            )
