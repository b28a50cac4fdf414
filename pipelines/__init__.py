"""Beam conversion jobs, one module per dataset, found by module name (no central list to edit)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

__all__ = ["Converted", "ConvertError", "available", "convert", "load"]


def _quiet_beam_import() -> None:
    """Beam's GCP module logs "apitools not found ..." on import whenever the GCP extras are absent, which is
    every run here (no GCP client is used): a warning a user can do nothing about, filtered out in every process
    that imports this package (the job's and its shard writers')."""
    import logging

    logging.getLogger().addFilter(lambda record: "apitools not found" not in record.getMessage())


_quiet_beam_import()

_SHARED = {
    "common",
    "cli",
    "conversion",
    "transforms",
    "bench",
    "bench_watch",
    "bench_coco",
    "bench_convert",
    "bench_startup",
    "fetch",
}  # modules of shared code, not datasets


def available() -> list[str]:
    """Dataset names: every module in this package that defines `main(argv)` and is not shared code."""
    names = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name in _SHARED:
            continue
        names.append(info.name)
    return sorted(names)


def load(name: str) -> ModuleType:
    if name not in available():
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available()) or 'none yet'}")
    return importlib.import_module(f"{__name__}.{name}")


def __getattr__(attr: str):
    """`from pipelines import convert` (pipelines/conversion.py), imported on first use."""
    if attr in ("convert", "Converted", "ConvertError"):
        return getattr(importlib.import_module(f"{__name__}.conversion"), attr)
    raise AttributeError(f"module 'pipelines' has no attribute {attr!r}")
