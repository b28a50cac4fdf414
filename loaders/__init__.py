"""DALI loaders, one module per dataset: `from loaders import imagenet_dali` imports `loaders.imagenet` lazily."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

__all__ = ["available"]

_SHARED = {
    "baselines",
    "bench",
    "bench_cifar10",
    "bench_coco",
    "bench_mix",
    "bench_reading",
    "bench_rounds",
    "cache",
    "preflight",
    "common",
    "core",
    "elastic",
    "generic",
    "mixture",
    "tensors",
    "integrity",
    "plan",
    "reading",
    "source",
    "ops",
    "stream",
}


def available() -> list[str]:
    """Dataset names with a loader module here (each exposes `<name>_dali`)."""
    return sorted(
        i.name for i in pkgutil.iter_modules(__path__) if not i.name.startswith("_") and i.name not in _SHARED
    )


def __getattr__(attr: str) -> Any:
    if attr in ("mix", "Source", "Mixture"):  # mixtures: `from loaders import Source, mix`
        return getattr(importlib.import_module(f"{__name__}.mixture"), attr)
    if attr in ("generic_dali", "image_classification", "raw_tensors"):  # your own data: loaders/generic.py
        return getattr(importlib.import_module(f"{__name__}.generic"), attr)
    if attr == "merge_states":
        return importlib.import_module(f"{__name__}.elastic").merge_states
    if attr.endswith("_dali") and attr[: -len("_dali")] in available():
        module = importlib.import_module(f"{__name__}.{attr[: -len('_dali')]}")
        return getattr(module, attr)
    raise AttributeError(f"module 'loaders' has no attribute {attr!r}; loaders: {available() or 'none yet'}")
