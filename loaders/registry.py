"""The registry of dataset loaders: `@register` on a module's `<name>_dali` puts it in `LOADERS` under `<name>`,
the name of its conversion job. The only list of loaders; `loaders.available()` and the conformance suite read it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["LOADERS", "register"]

LOADERS: dict[str, Callable[..., Any]] = {}


def register(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator of a dataset's loader function, named `<dataset>_dali`."""
    name = fn.__name__.removesuffix("_dali")
    if name == fn.__name__:
        raise ValueError(f"a dataset's loader is named <dataset>_dali, not {fn.__name__}")
    LOADERS[name] = fn
    return fn
