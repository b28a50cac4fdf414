"""The sample function of the conversion benchmark (`python -m pipelines.bench_convert`), in a module with no
imports so that every tool compared can import it: a file of `<root>/<class>/<name>.jpg` -> its bytes and class."""

from __future__ import annotations

import os

__all__ = ["inputs", "to_sample"]

CLASSES = [f"class{i:02d}" for i in range(10)]


def inputs(root: str, limit: int | None = None) -> list[str]:
    """The JPEGs under root, sorted (the first `limit`)."""
    paths = sorted(os.path.join(root, c, f) for c in CLASSES if os.path.isdir(os.path.join(root, c))
                   for f in os.listdir(os.path.join(root, c)))  # fmt: skip
    return paths[:limit]


def to_sample(path: str) -> dict:
    with open(path, "rb") as f:
        return {"jpg": f.read(), "cls": CLASSES.index(os.path.basename(os.path.dirname(path)))}
