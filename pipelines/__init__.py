"""Beam conversion jobs, one module per dataset, found by module name (no central list to edit)."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

__all__ = ["Converted", "ConvertError", "available", "convert", "load"]


def _quiet_beam_import() -> None:
    """Beam's GCP module logs "apitools not found ..." on import whenever the GCP extras are absent, which is
    every run here (no GCP client is used): a warning a user can do nothing about, filtered out in every process
    that imports this package (the job's and its shard writers')."""
    import logging

    logging.getLogger().addFilter(lambda record: "apitools not found" not in record.getMessage())


_quiet_beam_import()


def _jobs() -> dict[str, type]:
    """The registry (`pipelines.common.job.JOBS`), filled by `@register` as each module of this package is
    imported: a module that registers no job is shared code, and no list says which."""
    from pipelines.common.job import JOBS

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    return JOBS


def available() -> list[str]:
    """Dataset names: the registered jobs."""
    return sorted(_jobs())


def load(name: str) -> type:
    """The job class registered as `name` (its module alone is imported when the name is one)."""
    from pipelines.common.job import JOBS

    if name.isidentifier() and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        importlib.import_module(f"{__name__}.{name}")
    if name not in JOBS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available()) or 'none yet'}")
    return JOBS[name]


def __getattr__(attr: str):
    """`from pipelines import convert` (pipelines/conversion.py), imported on first use."""
    if attr in ("convert", "Converted", "ConvertError"):
        return getattr(importlib.import_module(f"{__name__}.conversion"), attr)
    raise AttributeError(f"module 'pipelines' has no attribute {attr!r}")
