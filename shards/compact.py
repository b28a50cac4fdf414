"""`python -m shards compact URL`: merge the small shards of older generations into full-size ones, as a new
generation that replaces them.

Every sample is kept exactly once: each input shard is checked against its sha256 first, samples go to output
shards by the same seeded hash of their key as a conversion job uses (ordered by it inside a shard), and the
counts must match before anything is published. The compaction's folder carries the replaced generations'
ledgers (inputs.jsonl) and quarantine, so a watcher still knows every input as converted and the totals still
reconcile. The replaced folders are removed only after the grace period (shards/generations.py).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

from shards import storage
from shards.errors import ShardFormatError
from shards.generations import (
    COMPACT_LOCK,
    COMPACT_STALE,
    DEFAULT_GRACE,
    collect,
    new_folder,
    publish_generation,
    split_lock,
)
from shards.keys import shard_of, shuffle_hash
from shards.manifest import read_manifest, split_url_of
from shards.publish import sha256_of, write_arrow_shard, write_tar_shard

__all__ = ["CompactReport", "compact"]


@dataclasses.dataclass
class CompactReport:
    url: str
    generation: int | None = None  # the compaction's, None when there was nothing to do
    replaced: list[int] = dataclasses.field(default_factory=list)
    shards_before: int = 0
    shards_after: int = 0
    samples: int = 0
    collected: list[str] = dataclasses.field(default_factory=list)


def _pick(m: dict[str, Any], small: int) -> list[dict[str, Any]]:
    """The generations to merge: every live one but the newest whose shards are small on average; none unless
    that makes fewer shards."""
    gens = m["generations"][:-1]
    by_gen: dict[int, list[int]] = {}
    for s in m["shards"]:
        by_gen.setdefault(s["generation"], []).append(s["num_bytes"])
    picked = [
        g
        for g in gens
        if by_gen.get(g["generation"]) and sum(by_gen[g["generation"]]) / len(by_gen[g["generation"]]) < small
    ]
    return picked if sum(g["shards"] for g in picked) > 1 else []


def _checked(split: str, entry: dict[str, Any]) -> str:
    url = storage.join(split, entry["path"])
    digest, size = sha256_of(url)
    if (digest, size) != (entry["sha256"], entry["num_bytes"]):
        raise ShardFormatError("does not match the manifest's sha256 and size; not compacted (run verify)", url=url)
    return url


def _tar_samples(split: str, entries: list[dict[str, Any]]) -> list[tuple[str, str, list]]:
    """(key, shard url, members) of every sample, from the indexes."""
    from shards.idx import parse_index
    from shards.keys import split_member_name

    out = []
    for e in entries:
        url = _checked(split, e)
        idx_url = storage.join(split, e["idx"])
        for members in parse_index(storage.read_bytes(idx_url), url=idx_url):
            out.append((split_member_name(members[0].name)[0], url, members))
    return out


def _read_tar(group: list[tuple[str, str, list]]) -> Iterator[tuple[str, dict[str, bytes]]]:
    from shards.keys import split_member_name

    for key, url, members in group:
        lo, hi = members[0].offset, members[-1].offset + members[-1].size
        data = storage.read_range(url, lo, hi - lo)
        yield key, {split_member_name(m.name)[1]: data[m.offset - lo : m.offset - lo + m.size] for m in members}


def compact(
    url: str, *, shard_size: int = 256_000_000, small: int | None = None, grace: float = DEFAULT_GRACE
) -> CompactReport:
    """Merge the generations whose shards average under `small` bytes (default half of `shard_size`)."""
    split = split_url_of(url)
    m = read_manifest(split)
    if m["version"] < 2:
        raise ValueError(f"{split} is a version-1 split (one generation): nothing to compact")
    # one compaction at a time: a second one refuses at once (LockedError names the first), rather than writing
    # a folder it cannot publish; a stale one (its process gone) is taken over
    with split_lock(split, "shards compact", wait=0, name=COMPACT_LOCK, stale=COMPACT_STALE):
        _remove_abandoned(split)
        return _compact(split, shard_size, small, grace)


def _remove_abandoned(split: str) -> list[str]:
    """`cmp-*` folders of compactions that never published (killed, or failed): no generation owns them and,
    under the compaction lock, no live compaction is writing them."""
    m = read_manifest(split)
    owned = {g["folder"] for g in m["generations"]} | {r["folder"] for r in m.get("retired", [])}
    gone = [n for n in storage.listdir(split) if n.startswith("cmp-") and n not in owned]
    for name in gone:
        storage.remove_tree(storage.join(split, name))
    return gone


def _compact(split: str, shard_size: int, small: int | None, grace: float) -> CompactReport:
    m = read_manifest(split)
    report = CompactReport(split)
    picked = _pick(m, small if small is not None else shard_size // 2)
    numbers = {g["generation"] for g in picked}
    entries = [s for s in m["shards"] if s["generation"] in numbers]
    if picked:
        seed = int(m["params"].get("seed", 0))
        n = max(1, math.ceil(sum(e["num_bytes"] for e in entries) / shard_size))
        folder = new_folder("cmp")
        out_url = storage.join(split, folder)
        written = _rewrite(split, out_url, entries, m, seed, n)
        total = sum(e["num_samples"] for e in entries)
        if sum(e["num_samples"] for e in written) != total:
            storage.remove_tree(out_url)
            raise RuntimeError(
                f"{split}: compaction wrote {sum(e['num_samples'] for e in written)} samples of "
                f"{total}; nothing published"
            )
        ledger = b"".join(storage.read_bytes(storage.join(split, g["inputs"])) for g in picked)
        storage.write_bytes(storage.join(out_url, "inputs.jsonl"), ledger)
        try:
            with split_lock(split, "shards compact"):
                published = publish_generation(
                    split,
                    folder=folder,
                    kind="compaction",
                    shards=written,
                    quarantine=[],
                    inputs_seen=0,
                    replaces=sorted(numbers),
                )
        except BaseException:
            storage.remove_tree(out_url)  # never published: nothing may point at it
            raise
        report.generation, report.replaced = published["generation"], sorted(numbers)
        report.shards_before, report.shards_after, report.samples = len(entries), len(written), total
    with split_lock(split, "shards compact"):
        report.collected = collect(split, grace=grace)
    return report


def _rewrite(split: str, out_url: str, entries: list, m: dict, seed: int, n: int) -> list[dict[str, Any]]:
    def target(key: str) -> int:
        return shard_of(key, seed, n)

    if entries[0]["path"].endswith(".arrow"):
        return _rewrite_arrow(split, out_url, entries, m, seed, n, target)
    groups: dict[int, list] = {}
    for s in _tar_samples(split, entries):
        groups.setdefault(target(s[0]), []).append(s)
    written = []
    for i, group in sorted(groups.items()):
        group.sort(key=lambda s: (shuffle_hash(s[0], seed), s[0]))
        written.append(write_tar_shard(out_url, i, _read_tar(group), fields=m["fields"]))
    return written


def _rewrite_arrow(split, out_url, entries, m, seed, n, target) -> list[dict[str, Any]]:
    """Arrow shards: each input table is read once (memory-mapped where local) and rows are taken by index."""
    import pyarrow as pa

    from shards.arrow import read_arrow_shard, schema_from_json

    schema = schema_from_json(m["fields"])
    key_column = m.get("key_column", "id")
    tables, rows = [], []
    for e in entries:
        u = _checked(split, e)
        f = pa.memory_map(storage.local_path(u)) if storage.is_local(u) else pa.BufferReader(storage.read_bytes(u))
        t = read_arrow_shard(f, url=u, schema=schema)
        tables.append(t)
        rows += [(k, len(tables) - 1, i) for i, k in enumerate(t.column(key_column).to_pylist())]
    groups: dict[int, list] = {}
    for r in rows:
        groups.setdefault(target(r[0]), []).append(r)
    written = []
    for i, group in sorted(groups.items()):
        group.sort(key=lambda r: (shuffle_hash(r[0], seed), r[0]))
        picked = (tables[t].slice(j, 1).to_pylist()[0] for _, t, j in group)
        written.append(write_arrow_shard(out_url, i, picked, schema=schema))
    return written
