"""`shards view`: what a split's page shows, gathered with the fewest reads - the manifest, the indexes of the
shards sampled, and the sampled members by ranged reads. The page itself is `shards/viewpage.py`.

A problem with one shard (missing, damaged, a hostile index) becomes that sample's error, shown in place: the page
is still written. Only a URL that is not a split is an error of the command.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from shards import storage
from shards.browse import _checked_fields
from shards.errors import ShardError
from shards.idx import parse_index
from shards.keys import split_member_name
from shards.manifest import read_manifest, split_url_of
from shards.table import ShardTable

__all__ = ["ANNOTATIONS", "Sample", "View", "counts", "field_value", "gather"]

READERS = 8  # shards (and quarantined inputs) read at once

# the little-endian annotation fields of the tar datasets: ext -> (dtype, row width; 0: a vector)
ANNOTATIONS = {
    "boxes": ("<f4", 4),
    "labels": ("<i4", 0),
    "imagelabels": ("<i4", 0),
    "genres": ("<i4", 0),
    "iscrowd": ("u1", 0),
    "area": ("<f4", 0),
    "polygons": ("<i4", 3),
    "vertices": ("<f4", 2),
    "keypoints": ("<f4", 51),
}


@dataclasses.dataclass
class Sample:
    key: str
    shard: str  # the shard's path in the split
    fields: dict[str, Any]  # ext -> bytes (tar) or a Python value (Arrow)
    error: str = ""  # why the sample could not be read, shown in its place
    warning: str = ""  # what --verify found wrong with its shard (its bytes are drawn, but are not the written ones)


@dataclasses.dataclass
class View:
    url: str
    manifest: dict[str, Any]
    samples: list[Sample]
    quarantine: list[dict[str, Any]]  # {stage, reason, count, examples: [{source, bytes (the input, if read)}]}
    problems: list[str]  # what could not be read beside the samples (the quarantine file, ...)
    verified: list[str] | None = None  # with --verify: every problem `shards verify` finds ([]: all checked, OK)


def counts(shards: Any, name: str) -> np.ndarray:
    """A count of every shard entry (`num_samples`, `num_bytes`), from a shard table's column where it has one."""
    if isinstance(shards, ShardTable):
        return shards.column(name)
    return np.array([int(e[name]) for e in shards], np.int64)


def _choose(sizes: np.ndarray, n: int, seed: int) -> list[tuple[int, int]]:
    """n (shard, index) pairs drawn without replacement across the split, sorted by shard then index."""
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    picks = np.random.default_rng(seed).choice(bounds[-1], min(n, bounds[-1]), replace=False)
    shard = np.searchsorted(bounds, picks, side="right") - 1
    return sorted((int(s), int(p - bounds[s])) for s, p in zip(shard, picks, strict=True))


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
    shards = manifest["shards"]  # a list, or a ShardTable (many shards): only the sampled entries are made
    by_shard: dict[int, set[int] | None] = {}
    if keys is None:
        for s, i in _choose(counts(shards, "num_samples"), n, seed):
            by_shard.setdefault(s, set()).add(i)  # type: ignore[union-attr]
    else:
        by_shard = dict.fromkeys(range(len(shards)))

    def read(item: tuple[int, set[int] | None]) -> list[Sample]:
        s, wanted = item
        entry = shards[s]
        try:
            reader = _arrow_samples if entry["path"].endswith(".arrow") else _tar_samples
            return reader(split, entry, wanted, set(keys) if keys else None)
        except (ShardError, OSError, ValueError) as e:  # the shard or its index: each sample drawn from it says so
            where = [f"{entry['path']} #{i}" for i in sorted(wanted)] if wanted is not None else [entry["path"]]
            return [Sample(name, entry["path"], {}, str(e)) for name in where]

    with ThreadPoolExecutor(READERS) as pool:  # shards read side by side: on an object store, latency adds up
        out = [sample for part in pool.map(read, by_shard.items()) for sample in part]
    if keys is not None:  # in the order given; a shard that could not be read keeps its error
        found = {s.key: s for s in out}
        missing = Sample("", "", {}, "no sample with this key in the split")
        errors = [s for s in out if s.error and s.key not in keys]
        out = [found.get(k) or dataclasses.replace(missing, key=k) for k in keys] + errors
    return out


def _arrow_samples(split: str, entry: dict[str, Any], wanted: set[int] | None, keys: set[str] | None) -> list[Sample]:
    """Rows of an Arrow shard: its footer, then its record batches (about 4 MB each) up to the last row wanted."""
    import pyarrow as pa

    out: list[Sample] = []
    last = max(wanted) if wanted else None
    with storage.open_read(storage.join(split, entry["path"])) as f:
        reader = pa.ipc.open_file(f)
        names = reader.schema.names
        key_col = "id" if "id" in names else names[0]
        first = 0
        for b in range(reader.num_record_batches):
            if last is not None and first > last:
                break
            batch = reader.get_batch(b)
            rows = range(first, first + batch.num_rows)
            first = rows.stop
            take = [i for i in rows if wanted is None or i in wanted]
            if keys is not None:
                ids = batch.column(key_col).to_pylist()
                take = [i for i in take if str(ids[i - rows.start]) in keys]
            if take:
                table = pa.Table.from_batches([batch]).take([i - rows.start for i in take])
                out += [Sample(str(row[key_col]), entry["path"], row) for row in table.to_pylist()]
    return out


MAX_SHOWN_INPUT = 32 << 20  # a quarantined input past this is named, not read for its thumbnail


def _input_bytes(data: Any) -> bytes | None:
    """A quarantined input's bytes, where its entry says where they are (None if it does not, or they are gone)."""
    if not isinstance(data, dict) or not 0 < int(data.get("length", 0)) <= MAX_SHOWN_INPUT:
        return None
    try:
        with storage.open_read(str(data["url"])) as f:
            f.seek(int(data.get("offset", 0)))
            raw = f.read(int(data["length"]))
        if data.get("deflated"):
            import zlib

            raw = zlib.decompressobj(-15).decompress(raw, MAX_SHOWN_INPUT)
        return raw
    except (OSError, ValueError, KeyError):
        return None


def _quarantine(split: str, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The quarantine grouped by stage and reason, most first, with up to 3 example sources each (and their bytes,
    for a thumbnail, where the entry says where they are)."""
    from shards.quarantine import read_quarantine

    groups: Counter = Counter()
    examples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for q in read_quarantine(storage.join(split, manifest["quarantine"]["path"])):
        k = (str(q.get("stage", "")), str(q.get("reason", "")))
        groups[k] += 1
        examples.setdefault(k, [])
        if len(examples[k]) < 3:
            examples[k].append({"source": str(q.get("source") or q.get("key") or ""), "data": q.get("data")})
    out = [{"stage": s, "reason": r, "count": c, "examples": examples[(s, r)]} for (s, r), c in groups.most_common()]
    shown = [example for group in out[:30] for example in group["examples"]]  # at most 90 ranged reads
    with ThreadPoolExecutor(READERS) as pool:
        for example, data in zip(shown, pool.map(_input_bytes, [e["data"] for e in shown]), strict=True):
            example["bytes"] = data
    for group in out:
        for example in group["examples"]:
            example.pop("data", None)
    return out


def gather(url: str, *, n: int = 48, seed: int = 0, keys: list[str] | None = None, verify: bool = False) -> View:
    """What the page of the split at `url` shows (`verify`: also every problem `shards verify` finds, which reads
    the whole split). ManifestMissing / ManifestError when `url` is not a split."""
    split = split_url_of(url)
    manifest = read_manifest(split)
    problems: list[str] = []
    samples = _samples(split, manifest, n, seed, keys)
    try:
        quarantine = _quarantine(split, manifest) if manifest["quarantine"]["count"] else []
    except (OSError, ValueError, ShardError) as e:
        quarantine, problems = [], [f"the quarantine could not be read: {e}"]
    verified = None
    if verify:
        from shards.verify import verify_split

        verified = verify_split(split).problems
        for sample in samples:  # a sample of a shard that fails says so in its place too
            url = storage.join(split, sample.shard) if sample.shard else None
            sample.warning = next((p for p in verified if url and url in p), "")
    return View(split, manifest, samples, quarantine, problems, verified)


def field_value(ext: str, data: Any) -> Any:
    """A stored field as the loaders read it: the little-endian arrays of the annotation fields, a parsed JSON."""
    if not isinstance(data, bytes | bytearray):
        return data
    if ext == "json":
        return json.loads(data)
    if ext in ANNOTATIONS:
        dtype, width = ANNOTATIONS[ext]
        values = np.frombuffer(bytes(data), dtype)
        return values.reshape(-1, width) if width else values
    return data
