"""What a loader is made of, besides its DALI graph: the read spec (which fields of a sample are read and how they
reach DALI or the batch) and the options every loader takes (one place for their names, types and defaults)."""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

from loaders.cache import DEFAULT_STREAMS

__all__ = ["LoaderOptions", "ReadSpec"]


def _frozen(value: Mapping | None) -> Mapping:
    return types.MappingProxyType(dict(value or {}))


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class ReadSpec:
    """Which fields a loader reads and how each reaches its consumer.

    - `fields`: the stored fields read from every sample;
    - `host_fields`: {field: parser} parsed in Python as they are read (small ones: labels, boxes; None: an Arrow
      column's 2-D array as it is), handed to DALI as arrays of the DALI type in `host_dtypes` (default INT64);
      the other fields reach DALI as bytes (UINT8);
    - `tensor_fields`: {output: (field, make(column, device))}: outputs made on the output device from a field's
      column, not by DALI (DALI has no scatter: multi-hot labels are built from their few class ids; the dense
      rows would be ~4x a YouTube-8M video's feature bytes through DALI's queues and over PCIe);
    - `prepare(columns) -> {input: column}`, on the reader thread, turns a batch's read columns into the DALI
      inputs named (with their DALI types) in `inputs` (per-object rows reordered, ids made: what DALI has no
      operator for); without it, each read field is an input;
    - `finish(batch)` adds outputs after DALI's (masks rasterized, captions tokenized).

    What follows from these (`tensor_columns`, `dali_fields`, `dali_inputs`) is computed once: the reader thread
    asks for it every batch.
    """

    fields: tuple[str, ...]
    host_fields: Mapping[str, Callable[[Any], Any] | None] = dataclasses.field(default_factory=dict)
    host_dtypes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tensor_fields: Mapping[str, tuple[str, Callable[[Any, str], Any]]] = dataclasses.field(default_factory=dict)
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    inputs: Mapping[str, str] | None = None
    finish: Callable[[dict[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        if self.prepare is not None and not self.inputs:
            raise ValueError("prepare= needs inputs={name: DALI type} naming what it makes")
        object.__setattr__(self, "fields", tuple(self.fields))
        for name in ("host_fields", "host_dtypes", "tensor_fields"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @functools.cached_property
    def tensor_columns(self) -> frozenset[str]:
        """Fields read for `tensor_fields` (kept beside the batch, not sent to DALI)."""
        return frozenset(f for f, _ in self.tensor_fields.values())

    @functools.cached_property
    def dali_fields(self) -> tuple[str, ...]:
        return tuple(f for f in self.fields if f not in self.tensor_columns)

    @functools.cached_property
    def dali_inputs(self) -> dict[str, str]:
        """{DALI input: DALI type name}, in the order the external source gives them."""
        if self.prepare is not None:
            return dict(self.inputs or {})
        return {f: self.host_dtypes.get(f, "INT64") if f in self.host_fields else "UINT8" for f in self.dali_fields}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoaderOptions:
    """The options every dataset loader takes as keywords (`imagenet_dali(url, seed=1, rank=0, ...)`)."""

    seed: int = 0  # the plan's and DALI's seed
    rank: int | None = None  # default: torch.distributed, else RANK, else 0
    world_size: int | None = None  # default: torch.distributed, else WORLD_SIZE, else 1
    num_threads: int | None = None  # DALI threads (default: the cores, shared among the node's ranks)
    cache_dir: str | None = None  # local cache for remote shards (default: a temporary one)
    cache_bytes: int = 64 << 30  # its size limit
    drop_last: bool = True  # every batch full, the same count on every rank
    open_shards: int = 8  # shards read at once per rank
    return_keys: bool = False  # also give each batch's sample keys
    verify: bool = True  # check local shards against the manifest's sha256, once per process
    fetch_streams: int = DEFAULT_STREAMS  # concurrent GETs per rank from an object store
    generation: int | None = None  # a split that grows by generations: the one to read (None: the newest)
    follow: bool = False  # plan each new epoch over the newest generation published by then
    epoch_size: int | None = None  # samples per epoch across all ranks (default: every sample of every source once)
    subset: float | int | None = None  # a fixed, seeded part of the split: a fraction in (0, 1] or a count
