"""Helpers that write small splits by hand, for tests that need exact control over shard contents."""

from __future__ import annotations

from collections.abc import Sequence

from shards import storage
from shards.manifest import build_manifest, write_manifest
from shards.publish import write_tar_shard
from shards.quarantine import dumps_quarantine


def make_split(
    url: str,
    shards: Sequence[Sequence[tuple[str, dict[str, bytes]]]],
    *,
    fields: dict[str, str] | None = None,
    quarantine: Sequence[dict] = (),
) -> dict:
    """Write each list of samples as one shard (no field checks at write time) and a manifest declaring `fields`."""
    entries = [write_tar_shard(url, i, samples) for i, samples in enumerate(shards)]
    storage.write_bytes(storage.join(url, "quarantine.jsonl"), dumps_quarantine(quarantine))
    n = sum(e["num_samples"] for e in entries)
    m = build_manifest(
        dataset="t",
        split="train",
        fields=fields or {"jpg": "image/jpeg", "cls": "label"},
        shards=entries,
        source={"url": "test", "inputs_seen": n + len(quarantine)},
        quarantine_count=len(quarantine),
        classes=["a", "b", "c"],
    )
    write_manifest(url, m)
    return m


def samples(prefix: str, n: int) -> list[tuple[str, dict[str, bytes]]]:
    return [(f"{prefix}{i}", {"jpg": f"jpeg-{prefix}{i}".encode() * 50, "cls": str(i % 3).encode()}) for i in range(n)]
