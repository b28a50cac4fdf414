"""The pointer shuffle as a Beam transform: pointers -> seeded shard assignment -> per-shard writer -> manifest.

Only small Pointer records go through GroupByKey; each shard's writer reads its bytes with ranged reads, so
memory stays bounded by one shard per worker. A writer first looks for its shard's progress record: if a
previous run committed the same shard (same pointers, same options, checksum intact) it is kept, not rewritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.common.images import BadInput
from pipelines.common.records import Pointer
from shards import storage
from shards.keys import shuffle_hash
from shards.manifest import build_manifest, write_manifest
from shards.publish import sha256_of, shard_name, write_tar_shard
from shards.quarantine import QUARANTINE_NAME, dumps_quarantine, quarantine_entry

__all__ = ["SplitPlan", "WriteSplit", "num_shards", "PROGRESS_DIR", "Encoder"]

PROGRESS_DIR = "_progress"
Encoder = Callable[[Pointer, bytes], dict[str, bytes]]


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


def num_shards(num_samples: int, total_bytes: int, shard_size: int, min_shards: int) -> int:
    """Shards for a split: by bytes, never fewer than `min_shards`, but at least ~16 samples per shard on
    average so that the seeded hash leaves no shard empty (a split of 100 samples gets 6 shards, not 64)."""
    if num_samples == 0:
        return 0
    n = max(min_shards, math.ceil(total_bytes / shard_size))
    return max(1, min(n, num_samples // 16))


def _assign(p: Pointer, counts: tuple[int, int], plan: SplitPlan) -> tuple[int, Pointer]:
    n = num_shards(counts[0], counts[1], plan.shard_size, plan.min_shards)
    return (shuffle_hash(p.key, plan.seed) * n) >> 64, p


class _RangeReader:
    """Ranged reads with a few files kept open (an archive read in place serves many pointers)."""

    def __init__(self, keep: int = 4):
        self._open: dict[str, Any] = {}
        self._keep = keep

    def read(self, url: str, offset: int, length: int) -> bytes:
        f = self._open.get(url)
        if f is None:
            if len(self._open) >= self._keep:
                self._open.pop(next(iter(self._open))).close()
            f = self._open[url] = storage.open_read(url, block_size=1 << 20)
        f.seek(offset)
        data = f.read(length)
        if len(data) != length:
            raise BadInput(f"input ends early: wanted {length} bytes at offset {offset}, got {len(data)}")
        return data

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()


def _fingerprint(plan: SplitPlan, pointers: list[Pointer]) -> str:
    h = hashlib.sha256(json.dumps([plan.params, plan.fields], sort_keys=True).encode())
    for p in pointers:
        h.update(json.dumps([p.key, p.url, p.offset, p.length, p.meta], sort_keys=True).encode())
    return h.hexdigest()


class _WriteShard(beam.DoFn):
    def __init__(self, plan: SplitPlan, encode: Encoder):
        self._plan = plan
        self._encode = encode
        ns = f"{plan.dataset}/{plan.split}"
        self._written = Metrics.counter(ns, "samples_written")
        self._bad = Metrics.counter(ns, "quarantined")
        self._bytes = Metrics.counter(ns, "bytes_written")
        self._shards = Metrics.counter(ns, "shards_committed")
        self._reused = Metrics.counter(ns, "shards_reused")

    def _reuse(self, progress_url: str, fingerprint: str) -> dict[str, Any] | None:
        try:
            record = json.loads(storage.read_bytes(progress_url))
        except (FileNotFoundError, ValueError):
            return None
        entry = record.get("entry")
        if record.get("fingerprint") != fingerprint:
            return None
        if entry is not None:
            tar = storage.join(self._plan.split_url, entry["path"])
            idx = storage.join(self._plan.split_url, entry["idx"])
            try:
                if not storage.exists(idx) or sha256_of(tar) != (entry["sha256"], entry["num_bytes"]):
                    return None
            except FileNotFoundError:
                return None
        return record

    def process(self, element: tuple[int, list[Pointer]]) -> Iterator[dict[str, Any]]:
        index, pointers = element
        plan = self._plan
        pointers = sorted(pointers, key=lambda p: (shuffle_hash(p.key, plan.seed), p.key))
        fingerprint = _fingerprint(plan, pointers)
        progress_url = storage.join(plan.split_url, PROGRESS_DIR, shard_name(index, "json"))
        record = self._reuse(progress_url, fingerprint)
        if record is not None:
            self._reused.inc()
            yield record
            return
        quarantine: list[dict[str, str]] = []
        reader = _RangeReader()

        def samples() -> Iterator[tuple[str, dict[str, bytes]]]:
            for p in pointers:
                try:
                    if "error" in p.meta:
                        raise BadInput(p.meta["error"], stage=p.meta.get("stage", "list"))
                    sample = self._encode(p, reader.read(p.url, p.offset, p.length) if p.length else b"")
                except BadInput as e:
                    quarantine.append(
                        quarantine_entry(key=p.key, source=f"{p.url}@{p.offset}", stage=e.stage, reason=str(e))
                    )
                    self._bad.inc()
                    continue
                yield p.key, sample

        try:
            entry: dict[str, Any] | None = write_tar_shard(plan.split_url, index, samples(), fields=plan.fields)
        finally:
            reader.close()
        if entry["num_samples"] == 0:  # everything in this shard was quarantined
            storage.remove(storage.join(plan.split_url, entry["path"]))
            storage.remove(storage.join(plan.split_url, entry["idx"]))
            entry = None
        else:
            self._written.inc(entry["num_samples"])
            self._bytes.inc(entry["num_bytes"])
            self._shards.inc()
        record = {"index": index, "fingerprint": fingerprint, "entry": entry, "quarantine": quarantine}
        record["seen"] = len(pointers)
        storage.write_bytes(progress_url, json.dumps(record, sort_keys=True).encode())
        yield record


def _finalize(records: list[dict[str, Any]], counts: tuple[int, int], plan: SplitPlan) -> dict[str, Any]:
    """Check that every input is accounted for, then publish quarantine.jsonl and, last, the manifest."""
    records = sorted(records, key=lambda r: r["index"])
    entries = [r["entry"] for r in records if r["entry"] is not None]
    quarantine = [q for r in records for q in r["quarantine"]]
    seen = sum(r["seen"] for r in records)
    written = sum(e["num_samples"] for e in entries)
    if seen != counts[0] or seen != written + len(quarantine):
        raise RuntimeError(
            f"{plan.split_url}: counts do not add up: {counts[0]} inputs listed, {seen} reached the writers, "
            f"{written} written + {len(quarantine)} quarantined; no manifest written"
        )
    storage.write_bytes(storage.join(plan.split_url, QUARANTINE_NAME), dumps_quarantine(quarantine))
    if seen and len(quarantine) > plan.max_bad_fraction * seen:
        reasons: dict[str, int] = {}
        for q in quarantine:
            reasons[q["reason"]] = reasons.get(q["reason"], 0) + 1
        top = "; ".join(f"{n}x {r}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:5])
        raise RuntimeError(
            f"{plan.split_url}: {len(quarantine)} of {seen} inputs quarantined, more than --max-bad-fraction "
            f"{plan.max_bad_fraction} allows ({top}); see {QUARANTINE_NAME}. No manifest written."
        )
    if not entries:
        raise RuntimeError(f"{plan.split_url}: no sample could be written ({seen} inputs)")
    manifest = build_manifest(
        dataset=plan.dataset,
        split=plan.split,
        fields=plan.fields,
        shards=entries,
        classes=plan.classes,
        quarantine_count=len(quarantine),
        source={**plan.source, "inputs_seen": seen},
        params=plan.params,
    )
    write_manifest(plan.split_url, manifest)
    # Progress records stay in _progress/: a re-run with the same input and options then re-checks and keeps
    # every shard instead of rewriting it. Readers never look there; the manifest is the truth.
    return {"split": plan.split, "samples": written, "quarantined": len(quarantine), "shards": len(entries)}


class WriteSplit(beam.PTransform):
    """PCollection[Pointer] -> one published split (shards, indexes, quarantine.jsonl, manifest.json)."""

    def __init__(self, plan: SplitPlan, encode: Encoder):
        super().__init__(label=f"Write {plan.split}")
        self._plan = plan
        self._encode = encode

    def expand(self, pointers):
        plan = self._plan
        counts = (
            pointers
            | "Count" >> beam.Map(lambda p: (1, p.length))
            | "Sum" >> beam.CombineGlobally(lambda xs: tuple(map(sum, zip(*xs, strict=True))) if xs else (0, 0))
        )
        side = beam.pvalue.AsSingleton(counts)
        records = (
            pointers
            | "Assign" >> beam.Map(_assign, side, plan)
            | "Group pointers" >> beam.GroupByKey()
            | "Write shards" >> beam.ParDo(_WriteShard(plan, self._encode))
        )
        return records | "Collect" >> beam.combiners.ToList() | "Commit" >> beam.Map(_finalize, side, plan)
