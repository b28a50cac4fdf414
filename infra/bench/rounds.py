"""Interleaved benchmark rounds, shared by the benchmarks that compare a loader with a baseline or another
configuration in one run (`loader_mix`, `loader_coco`, `loader_cifar10`): machines here are noisy, so each round
measures every contender once, in turn, and the figure is the median of the rounds."""

from __future__ import annotations

import statistics
from collections.abc import Callable

__all__ = ["interleaved"]


def interleaved(
    contenders: dict[str, Callable[[], dict]], rounds: int
) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """Run `rounds` rounds of every contender's measurement (a dict with `images_per_s`), printing each round;
    return the runs and each contender's median images/s."""
    runs: dict[str, list[dict]] = {k: [] for k in contenders}
    for r in range(rounds):
        for name, measure in contenders.items():
            runs[name].append(measure())
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]['images_per_s']:.1f} images/s" for k, v in runs.items()),
              flush=True)  # fmt: skip
    return runs, {k: statistics.median(x["images_per_s"] for x in v) for k, v in runs.items()}
