"""Helpers for the streaming-ingest tests: an ImageNet folder that grows, and a watcher over it run in-process."""

from __future__ import annotations

import concurrent.futures as cf
import functools
from pathlib import Path

from infra.photos import photo_jpeg
from pipelines.common.increments import SplitWatcher
from pipelines.common.sharding import SplitPlan
from pipelines.imagenet import FIELDS, WNIDS, ImageNetConfig, WatchedFolders, encode_sample

POOL = cf.ThreadPoolExecutor(2)  # the writers in threads: the job uses processes, the code path is the same


def plan_for(out: Path, *, max_bad: float = 0.2) -> SplitPlan:
    return SplitPlan(dataset="imagenet", split="train", split_url=str(out / "train"), fields=FIELDS, classes=WNIDS,
                     source={"url": "raw", "layout": "folders"}, params={"shard_size": 256_000_000, "min_shards": 2,
                     "seed": 0}, seed=0, shard_size=256_000_000, min_shards=2, max_bad_fraction=max_bad)  # fmt: skip


def watcher(raw: Path, out: Path, **kw) -> SplitWatcher:
    encode = functools.partial(encode_sample, cfg=ImageNetConfig())
    return SplitWatcher(plan_for(out, **kw), WatchedFolders(str(raw), "folders"), encode, settle=0.3)


def add(raw: Path, wnid: str, files: dict[str, bytes]) -> None:
    (raw / "train" / wnid).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (raw / "train" / wnid / name).write_bytes(data)


def add_photos(raw: Path, start: int, n: int) -> set[str]:
    """n photo-like images spread over three classes; their keys."""
    keys = set()
    for i in range(start, start + n):
        wnid = WNIDS[i % 3]
        add(raw, wnid, {f"{wnid}_{i}.JPEG": photo_jpeg(i, size=(96, 72))})
        keys.add(f"{wnid}_{i}")
    return keys
