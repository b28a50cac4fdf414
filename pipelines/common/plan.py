"""A split's plan: what the writers and the finaliser of one split need (no Beam here: a plan is made, checked
and pickled before Beam is imported)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

from pipelines.common.options import JobOptions
from shards import storage

__all__ = ["PROGRESS_DIR", "SplitPlan", "num_shards", "remove_stale_temporaries"]

PROGRESS_DIR = "_progress"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SplitPlan:
    """Everything the writers and the finaliser of one split need; pickled to Beam workers."""

    dataset: str
    split: str
    split_url: str
    fields: dict[str, str]
    classes: list[str] | None
    source: dict[str, Any]  # url, layout
    params: dict[str, Any]  # every option that changes the output bytes
    seed: int
    shard_size: int
    min_shards: int
    max_bad_fraction: float
    writer_processes: int = 1  # shards written at once per Beam worker; 0: one per core
    storage_options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict, repr=False)
    format: str = "tar"  # or "arrow": `fields` is then the Arrow schema (column -> type), each sample one row
    benign_stages: tuple[str, ...] = ()  # quarantine stages that are a choice (a filter), not bad input
    input_checksums: bool = False  # writers report the CRC32C of inputs they read whole (a watcher's ledger)
    side_table: str | None = None  # "module:function": samples' json -> pyarrow Table, one Parquet file per shard
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # more manifest keys
    isolate: bool = False  # always write in pool processes (a user's function: its crash must not take the caller)
    input_bytes: int = 0  # bytes an input is taken to make, for the shard count of inputs counted on the workers

    def shard_count(self, inputs: int, total_bytes: int) -> int:
        """Shards for `inputs` pointers of `total_bytes` (`num_shards`, with `input_bytes` per input added)."""
        return num_shards(inputs, total_bytes + inputs * self.input_bytes, self.shard_size, self.min_shards)

    @classmethod
    def for_job(cls, job: JobOptions, split: str, *, params: dict[str, Any], **fields: Any) -> SplitPlan:
        """The plan of one split with what the job's common options decide filled in: the split's URL under
        --output, the job's params beside the dataset's, seed, shard sizes, bad fraction, writers, storage.
        Temporaries an interrupted run left in the split (whose writers are gone) are removed here, first."""
        split_url = storage.join(job.output, split)
        remove_stale_temporaries(split_url)
        return cls(
            split=split,
            split_url=split_url,
            params={**job.params(), **params},
            seed=job.seed,
            shard_size=job.shard_size,
            min_shards=job.min_shards,
            max_bad_fraction=job.max_bad_fraction,
            writer_processes=job.writer_processes,
            storage_options=job.storage_options,
            **fields,
        )


def remove_stale_temporaries(split_url: str) -> None:
    """Remove the temporaries writers that are gone left in a split (`storage.stale_temporaries`): an interrupted
    run's, before a job starts; a lost worker's, before the manifest is written (its task ran again elsewhere)."""
    for folder in (split_url, storage.join(split_url, PROGRESS_DIR), storage.join(split_url, "annotations")):
        for name in storage.stale_temporaries(folder):
            with contextlib.suppress(FileNotFoundError):
                storage.remove(storage.join(folder, name))


def num_shards(num_samples: int, total_bytes: int, shard_size: int, min_shards: int) -> int:
    """Shards for a split: by bytes, never fewer than `min_shards`, but at least ~16 samples per shard on
    average so that the seeded hash leaves no shard empty (a split of 100 samples gets 6 shards, not 64)."""
    if num_samples == 0:
        return 0
    n = max(min_shards, math.ceil(total_bytes / shard_size))
    return max(1, min(n, num_samples // 16))
