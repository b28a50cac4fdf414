"""What one tick of a split's watcher did (`IncrementReport`), and the line the streaming job prints for it."""

from __future__ import annotations

import dataclasses

from shards.units import counted

__all__ = ["IncrementReport"]


@dataclasses.dataclass
class IncrementReport:
    split: str
    generation: int | None  # None: nothing new, or not published (rejected)
    files: int = 0
    inputs: int = 0
    samples: int = 0
    shards: int = 0
    quarantined: int = 0
    changed: int = 0
    unstable: int = 0
    rejected: str | None = None  # why the increment was not published
    latency: float | None = None  # publication - the newest input's arrival, seconds
    waited: float | None = None  # publication - the oldest input's arrival
    backlog: bool = False  # the first generation: what was there before the watcher started (latency means nothing)

    def line(self, dataset: str) -> str:
        head = f"[{dataset} {self.split}]"
        waiting = f", {self.unstable} still being written" if self.unstable else ""
        if self.rejected:
            return f"{head} increment NOT published: {self.rejected}{waiting}"
        if self.generation is None:
            return f"{head} nothing new{waiting}"
        changed = f", {self.changed} changed after conversion (quarantined)" if self.changed else ""
        when = (
            "the backlog found at the start, in one increment"
            if self.backlog
            else f"published {self.latency:.1f}s after the newest input arrived ({self.waited:.1f}s after the oldest)"
        )
        return (
            f"{head} generation {self.generation}: {counted(self.files, 'file')}, {counted(self.inputs, 'input')} -> "
            f"{counted(self.samples, 'sample')} in {counted(self.shards, 'shard')}, {self.quarantined} quarantined"
            f"{changed}{waiting}; {when}"
        )
