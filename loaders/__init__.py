"""DALI loaders, one module per dataset: `from loaders import imagenet_dali` imports `loaders.imagenet` lazily."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import Any

__all__ = ["available"]


def _loaders() -> dict[str, Any]:
    """The registry (`loaders.registry.LOADERS`), filled by `@register` as each module of this package is
    imported: a module that registers no loader is shared code, and no list says which."""
    from loaders.registry import LOADERS

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    return LOADERS


def available() -> list[str]:
    """Dataset names with a registered loader (`loaders.<name>_dali`)."""
    return sorted(_loaders())


def __getattr__(attr: str) -> Any:
    if attr in ("mix", "Source", "Mixture"):  # mixtures: `from loaders import Source, mix`
        return getattr(importlib.import_module(f"{__name__}.mixture"), attr)
    if attr in ("generic_dali", "image_classification", "raw_tensors"):  # your own data: loaders/generic.py
        return getattr(importlib.import_module(f"{__name__}.generic"), attr)
    if attr == "merge_states":
        return importlib.import_module(f"{__name__}.elastic").merge_states
    name = attr.removesuffix("_dali")
    if name != attr and name.isidentifier() and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        from loaders.registry import LOADERS

        importlib.import_module(f"{__name__}.{name}")
        if name in LOADERS:
            return LOADERS[name]
    raise AttributeError(f"module 'loaders' has no attribute {attr!r}; loaders: {available() or 'none yet'}")
