"""Helpers that write small splits by hand, for tests that need exact control over shard contents."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shards import storage
from shards.manifest import build_manifest, read_manifest, write_manifest
from shards.publish import write_tar_shard
from shards.quarantine import dumps_quarantine
from shards.wds import iter_samples


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


def photo_shards(name: str, sizes: Sequence[int]) -> list[list[tuple[str, dict[str, bytes]]]]:
    """Shards of photo-like samples (jpg + cls over `make_split`'s 3 classes), keyed `<name><shard>k<i>`."""
    from infra.photos import photo_jpeg

    return [[(f"{name}{s}k{i:02d}", {"jpg": photo_jpeg(50 * s + i, size=(40, 32)), "cls": b"%d" % (i % 3)})
             for i in range(n)] for s, n in enumerate(sizes)]  # fmt: skip


def read_samples(split: Path, manifest: dict | None = None) -> dict[str, dict[str, bytes]]:
    """Every sample of a local split (or of one of its generations' manifests) by the reference reader."""
    out: dict[str, dict[str, bytes]] = {}
    for entry in (manifest or read_manifest(str(split)))["shards"]:
        with open(split / entry["path"], "rb") as f:
            for key, sample in iter_samples(f, url=entry["path"]):
                assert key not in out, f"{key} is in two shards"
                out[key] = sample
    return out
