"""`shards view`: what a split's page shows, gathered with the fewest reads - the manifest, the indexes of the
shards sampled, and the sampled members by ranged reads. The page itself is `shards/viewpage.py`.

A problem with one shard (missing, damaged, a hostile index) becomes that sample's error, shown in place: the page
is still written. Only a URL that is not a split is an error of the command.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Any

import numpy as np

from shards import storage
from shards.browse import _checked_fields
from shards.errors import ShardError
from shards.idx import parse_index
from shards.keys import split_member_name
from shards.manifest import read_manifest, split_url_of

__all__ = ["Sample", "View", "gather"]


@dataclasses.dataclass
class Sample:
    key: str
    shard: str  # the shard's path in the split
    fields: dict[str, Any]  # ext -> bytes (tar) or a Python value (Arrow)
    error: str = ""  # why the sample could not be read, shown in its place


@dataclasses.dataclass
class View:
    url: str
    manifest: dict[str, Any]
    samples: list[Sample]
    quarantine: list[dict[str, Any]]  # {stage, reason, count, examples: [source, ...]}
    problems: list[str]  # what could not be read beside the samples (the quarantine file, ...)


def _choose(sizes: list[int], n: int, seed: int) -> list[tuple[int, int]]:
    """n (shard, index) pairs drawn without replacement across the split, sorted by shard then index."""
    total = int(sum(sizes))
    picks = np.random.default_rng(seed).choice(total, min(n, total), replace=False) if total else []
    bounds = np.cumsum([0, *sizes])
    out = [(int(np.searchsorted(bounds, p, side="right") - 1), 0) for p in picks]
    return sorted((s, int(p - bounds[s])) for (s, _), p in zip(out, picks, strict=True))


def _tar_samples(split: str, entry: dict[str, Any], wanted: set[int] | None, keys: set[str] | None) -> list[Sample]:
    shard_url = storage.join(split, entry["path"])
    idx_url = storage.join(split, entry["idx"])
    index = parse_index(storage.read_bytes(idx_url), url=idx_url)
    out = []
    for i, members in enumerate(index):
        key = split_member_name(members[0].name)[0] if members else f"#{i}"
        if (wanted is not None and i not in wanted) or (keys is not None and key not in keys):
            continue
        try:
            out.append(Sample(key, entry["path"], _checked_fields(shard_url, entry, members)))
        except (ShardError, OSError) as e:
            out.append(Sample(key, entry["path"], {}, str(e)))
    return out


def _samples(split: str, manifest: dict[str, Any], n: int, seed: int, keys: list[str] | None) -> list[Sample]:
    shards = list(manifest["shards"])
    by_shard: dict[int, set[int] | None] = {}
    if keys is None:
        for s, i in _choose([e["num_samples"] for e in shards], n, seed):
            by_shard.setdefault(s, set()).add(i)  # type: ignore[union-attr]
    else:
        by_shard = dict.fromkeys(range(len(shards)))
    out: list[Sample] = []
    for s, wanted in by_shard.items():
        entry = shards[s]
        try:
            read = _arrow_samples if entry["path"].endswith(".arrow") else _tar_samples
            out += read(split, entry, wanted, set(keys) if keys else None)
        except (ShardError, OSError, ValueError) as e:  # the shard or its index: each sample drawn from it says so
            where = [f"{entry['path']} #{i}" for i in sorted(wanted)] if wanted is not None else [entry["path"]]
            out += [Sample(name, entry["path"], {}, str(e)) for name in where]
    if keys is not None:  # in the order given; a shard that could not be read keeps its error
        found = {s.key: s for s in out}
        missing = Sample("", "", {}, "no sample with this key in the split")
        errors = [s for s in out if s.error and s.key not in keys]
        out = [found.get(k) or dataclasses.replace(missing, key=k) for k in keys] + errors
    return out


def _arrow_samples(split: str, entry: dict[str, Any], wanted: set[int] | None, keys: set[str] | None) -> list[Sample]:
    import pyarrow as pa

    shard_url = storage.join(split, entry["path"])
    with storage.open_read(shard_url) as f:
        table = pa.ipc.open_file(pa.BufferReader(f.read())).read_all()
    key_col = "id" if "id" in table.column_names else table.column_names[0]
    out = []
    for i, row in enumerate(table.to_pylist()):
        key = str(row[key_col])
        if (wanted is None or i in wanted) and (keys is None or key in keys):
            out.append(Sample(key, entry["path"], row))
    return out


def _quarantine(split: str, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The quarantine grouped by stage and reason, most first, with up to 3 example sources each."""
    from shards.quarantine import read_quarantine

    groups: Counter = Counter()
    examples: dict[tuple[str, str], list[str]] = {}
    for q in read_quarantine(storage.join(split, manifest["quarantine"]["path"])):
        k = (str(q.get("stage", "")), str(q.get("reason", "")))
        groups[k] += 1
        examples.setdefault(k, [])
        if len(examples[k]) < 3:
            examples[k].append(str(q.get("source") or q.get("key") or ""))
    return [{"stage": s, "reason": r, "count": c, "examples": examples[(s, r)]} for (s, r), c in groups.most_common()]


def gather(url: str, *, n: int = 48, seed: int = 0, keys: list[str] | None = None) -> View:
    """What the page of the split at `url` shows. ManifestMissing / ManifestError when `url` is not a split."""
    split = split_url_of(url)
    manifest = read_manifest(split)
    problems: list[str] = []
    samples = _samples(split, manifest, n, seed, keys)
    try:
        quarantine = _quarantine(split, manifest) if manifest["quarantine"]["count"] else []
    except (OSError, ValueError, ShardError) as e:
        quarantine, problems = [], [f"the quarantine could not be read: {e}"]
    return View(split, manifest, samples, quarantine, problems)


def field_value(ext: str, data: Any) -> Any:
    """A stored field as the loaders read it: the little-endian arrays of the annotation fields, a parsed JSON."""
    if not isinstance(data, bytes | bytearray):
        return data
    if ext == "json":
        return json.loads(data)
    kinds = {"boxes": ("<f4", 4), "labels": ("<i4", 0), "imagelabels": ("<i4", 0), "iscrowd": ("u1", 0),
             "area": ("<f4", 0), "polygons": ("<i4", 3), "vertices": ("<f4", 2), "keypoints": ("<f4", 51)}  # fmt: skip
    if ext in kinds:
        dtype, width = kinds[ext]
        values = np.frombuffer(bytes(data), dtype)
        return values.reshape(-1, width) if width else values
    return data
