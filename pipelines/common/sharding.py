"""The pointer shuffle as a Beam transform: pointers -> seeded shard assignment -> per-shard writer -> manifest.

Only small Pointer records go through GroupByKey; each shard's writer reads its bytes with ranged reads, so
memory stays bounded by one shard per worker. A writer first looks for its shard's progress record: if a
previous run committed the same shard (same pointers, same options, checksum intact) it is kept, not rewritten.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import pickle
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipelines.common.options import use_storage_options
from pipelines.common.plan import SplitPlan, num_shards, remove_stale_temporaries
from pipelines.common.records import Pointer
from pipelines.common.shardwriter import PROGRESS_DIR, Encoder, die_with_job, write_shard
from shards import storage
from shards.keys import shard_of
from shards.manifest import build_manifest, write_manifest
from shards.quarantine import QUARANTINE_NAME, dumps_quarantine

__all__ = ["BatchPointers", "Pointers", "SplitPlan", "WriteSplit", "num_shards", "writer_context"]


class Pointers(list):
    """A list of Pointers as one Beam element (a listing unit's, or one shard's)."""


class PointersCoder(beam.coders.Coder):
    """Codes a whole Pointers list with one pickle of plain tuples. Beam's default coder pickles each
    NamedTuple on its own, about 9x slower, and a pointer crosses three or four stage boundaries."""

    def encode(self, value: Pointers) -> bytes:
        return pickle.dumps([tuple(p) for p in value], protocol=5)

    def decode(self, encoded: bytes) -> Pointers:
        return Pointers(map(Pointer._make, pickle.loads(encoded)))

    def is_deterministic(self) -> bool:
        return False  # dicts inside; never used as a key

    def to_type_hint(self):
        return Pointers


beam.coders.registry.register_coder(Pointers, PointersCoder)


def _assign(pointers: list[Pointer], counts: tuple[int, int], plan: SplitPlan) -> Iterator[tuple[int, Pointers]]:
    """Split one listing unit's pointers by shard: (shard, [pointers]) pairs, so Beam moves a few lists per unit
    instead of one element per image."""
    n = plan.shard_count(*counts)
    by_shard: dict[int, Pointers] = {}
    for p in pointers:
        by_shard.setdefault(shard_of(p.key, plan.seed, n), Pointers()).append(p)
    yield from by_shard.items()


def _merge(group: tuple[int, list[list[Pointer]]]) -> tuple[int, Pointers]:
    index, lists = group
    return index, Pointers(p for part in lists for p in part)


def writer_context(encode_module: str):
    """The multiprocessing context of the shard-writer pools: forkserver (the launcher runs threads, so plain
    fork is unsafe) with the writer and the dataset module preloaded, so each pool process starts with them."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["pipelines.common.shardwriter", encode_module])
    return ctx


def _workers(plan: SplitPlan) -> int:
    import os

    return plan.writer_processes or os.cpu_count() or 1


class _WriteShards(beam.DoFn):
    """Writes shards; with `writer_processes` > 1 (the local runner) on a small process pool, since
    per-sample Python work would serialise threads on the GIL and Beam's multi-process local mode spends about
    as much CPU on its gRPC data plane as the work itself."""

    def __init__(self, plan: SplitPlan, encode: Encoder):
        self._plan = plan
        self._encode = encode
        ns = f"{plan.dataset}/{plan.split}"
        self._written = Metrics.counter(ns, "samples_written")
        self._bad = Metrics.counter(ns, "quarantined")
        self._bytes = Metrics.counter(ns, "bytes_written")
        self._shards = Metrics.counter(ns, "shards_committed")
        self._reused = Metrics.counter(ns, "shards_reused")
        self._pool = None
        self._started = False

    def _start_pool(self, shards: int) -> None:
        """The writer pool, started at the first shard, as large as there are shards to write (at most one
        process per core): a split of one shard is written here, in-process - starting and stopping a pool of
        forkserver processes cost 1.5 s of a 4.6 s job on 30 files (measured), for nothing. A user's function
        (`isolate`) always runs in a pool process on the local runner: its crash must not take the caller's
        process (convert() runs in it), and the per-input time limit needs the process's main thread."""
        workers = min(_workers(self._plan), shards)
        if workers > 1 or (self._plan.isolate and self._plan.writer_processes != 1):
            import atexit
            import os

            from pipelines.common.shardwriter import notes_dir, remove_notes

            self._notes = notes_dir(os.getpid())
            atexit.register(remove_notes, self._notes)  # Beam's local runner does not always call teardown
            # forkserver: the launcher runs threads (the runner's, the progress line's), so plain fork is unsafe
            ctx = writer_context(self._encode_module())
            self._pool = cf.ProcessPoolExecutor(
                max_workers=max(1, workers),
                mp_context=ctx,
                initializer=die_with_job,
                initargs=(os.getpid(), self._notes),
            )
        self._started = True

    def _encode_module(self) -> str:
        fn = getattr(self._encode, "func", self._encode)
        return getattr(fn, "__module__", None) or "pipelines"

    def teardown(self) -> None:
        if self._pool is not None:
            from pipelines.common.shardwriter import remove_notes

            self._pool.shutdown(wait=True)
            remove_notes(self._notes)
        self._pool, self._started = None, False

    def start_bundle(self) -> None:
        self._pending: list[Any] = []

    def process(self, element: tuple[int, list[Pointer]], counts: tuple[int, int]) -> Iterator[dict[str, Any]]:
        if not self._started:
            plan = self._plan
            self._start_pool(plan.shard_count(*counts))
        if self._pool is None:
            yield self._count(*write_shard(self._plan, self._encode, element))
        else:  # keep the pool full: every shard of the bundle is queued at once, results come in finish_bundle
            self._pending.append(self._pool.submit(write_shard, self._plan, self._encode, element))

    def finish_bundle(self) -> Iterator[Any]:
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.timestamp import MIN_TIMESTAMP
        from apache_beam.utils.windowed_value import WindowedValue

        pending, self._pending = self._pending, []
        for future in pending:
            try:
                record = future.result()
            except cf.process.BrokenProcessPool:
                raise RuntimeError(self._died()) from None
            yield WindowedValue(self._count(*record), MIN_TIMESTAMP, [GlobalWindow()])

    def _died(self) -> str:
        """Why the job stops when a writer process died: the input it was converting, and its temporaries gone."""

        from pipelines.common.shardwriter import dead_writers_inputs

        self._pool.shutdown(wait=True)  # the broken pool has ended its other writers: wait for them
        inputs = dead_writers_inputs(self._notes)
        for sub in (self._plan.split_url, storage.join(self._plan.split_url, PROGRESS_DIR)):
            for name in storage.stale_temporaries(sub, max_age=3600):
                with contextlib.suppress(FileNotFoundError):
                    storage.remove(storage.join(sub, name))
        what = f"while converting {'; '.join(inputs)}" if inputs else "(no input was being converted)"
        return (
            f"{self._plan.split_url}: a writer process died {what}: a crash in native code, os.abort() or the "
            "OOM killer; fix or remove that input (its partial shard was removed) and run the job again"
        )

    def _count(self, record: dict[str, Any], reused: bool) -> dict[str, Any]:
        """Counters are updated here, on the DoFn's own thread, where Beam collects them."""
        entry = record["entry"]
        if reused:
            self._reused.inc()
        elif entry is not None:
            self._written.inc(entry["num_samples"])
            self._bytes.inc(entry["num_bytes"])
            self._shards.inc()
        self._bad.inc(len(record["quarantine"]))
        return record


def _finalize(records: list[dict[str, Any]], counts: tuple[int, int], plan: SplitPlan) -> dict[str, Any]:
    """Check that every input is accounted for, then publish quarantine.jsonl and, last, the manifest."""
    use_storage_options(plan.storage_options)
    records = sorted(records, key=lambda r: r["index"])
    entries = [r["entry"] for r in records if r["entry"] is not None]
    quarantine = [q for r in records for q in r["quarantine"]]
    seen = sum(r["seen"] for r in records)
    written = sum(e["num_samples"] for e in entries)
    expanded = sum(r.get("expanded", 0) for r in records)  # a user's function may make several samples of one input
    if seen != counts[0] or seen + expanded != written + len(quarantine):
        raise RuntimeError(
            f"{plan.split_url}: counts do not add up: {counts[0]} inputs listed, {seen} reached the writers, "
            f"{written} written + {len(quarantine)} quarantined; no manifest written"
        )
    _check_keys(plan, records)
    storage.write_bytes(storage.join(plan.split_url, QUARANTINE_NAME), dumps_quarantine(quarantine))
    bad = [q for q in quarantine if q["stage"] not in plan.benign_stages]
    if seen and len(bad) > plan.max_bad_fraction * seen:
        reasons: dict[str, int] = {}
        for q in bad:
            reasons[q["reason"]] = reasons.get(q["reason"], 0) + 1
        top = "; ".join(f"{n}x {r}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:5])
        raise RuntimeError(
            f"{plan.split_url}: {len(bad)} of {seen} inputs quarantined, more than --max-bad-fraction "
            f"{plan.max_bad_fraction} allows ({top}); see {QUARANTINE_NAME}. No manifest written."
        )
    if not entries:
        raise RuntimeError(f"{plan.split_url}: no sample could be written ({seen} inputs)")
    remove_stale_temporaries(plan.split_url)  # a lost worker's half-written shard (its task ran again elsewhere)
    manifest = build_manifest(
        dataset=plan.dataset,
        split=plan.split,
        fields=plan.fields,
        shards=entries,
        classes=plan.classes,
        quarantine_count=len(quarantine),
        # inputs_seen reconciles with samples + quarantine: a function's several samples of one input count each
        source={**plan.source, "inputs_seen": seen + expanded, **({"inputs": seen} if expanded else {})},
        params=plan.params,
        **plan.extra,
        **({"side_tables": {"annotations": [r["side"] for r in records if r.get("side")]}} if plan.side_table else {}),
    )
    write_manifest(plan.split_url, manifest)
    # Progress records stay in _progress/: a re-run with the same input and options then re-checks and keeps
    # every shard instead of rewriting it. Readers never look there; the manifest is the truth.
    return {"split": plan.split, "samples": written, "quarantined": len(quarantine), "shards": len(entries)}


def _check_keys(plan: SplitPlan, records: list[dict[str, Any]]) -> None:
    """Keys a user's function gave are unique within a shard (a repeat is quarantined there); across shards a
    repeat fails the job, naming both inputs (its shard is written by then)."""
    owner: dict[str, str] = {}
    for r in records:
        for key, source in r.get("keys", {}).items():
            if key in owner:
                raise RuntimeError(
                    f"{plan.split_url}: sample key {key!r} was given by two inputs, {owner[key]} and {source}; "
                    "keys must be unique in a split (leave __key__ out to have one made per input). "
                    "No manifest written."
                )
            owner[key] = source


class BatchPointers(beam.PTransform):
    """PCollection[(split, Pointer)] of one split (after a join) -> PCollection[Pointers], a few lists, which is
    what WriteSplit takes."""

    def expand(self, pairs):
        return (
            pairs
            | "Pointers" >> beam.Map(lambda kv: kv[1])
            | "Batch" >> beam.BatchElements(min_batch_size=64, max_batch_size=2048)
            | "List" >> beam.Map(Pointers).with_output_types(Pointers)
        )


class WriteSplit(beam.PTransform):
    """PCollection[list[Pointer]] (one list per listing unit) -> one published split (shards, indexes,
    quarantine.jsonl, manifest.json)."""

    def __init__(self, plan: SplitPlan, encode: Encoder):
        super().__init__(label=f"Write {plan.split}")
        self._plan = plan
        self._encode = encode

    def expand(self, pointers):
        plan = self._plan
        counts = (
            pointers
            | "Count" >> beam.Map(lambda ps: (len(ps), sum(p.length for p in ps)))
            | "Sum" >> beam.CombineGlobally(lambda xs: tuple(map(sum, zip(*xs, strict=True))) if xs else (0, 0))
        )
        side = beam.pvalue.AsSingleton(counts)
        records = (
            pointers
            | "Assign" >> beam.FlatMap(_assign, side, plan).with_output_types(tuple[int, Pointers])
            | "Group pointers" >> beam.GroupByKey()
            | "Merge" >> beam.Map(_merge).with_output_types(tuple[int, Pointers])
            | "Write shards" >> beam.ParDo(_WriteShards(plan, self._encode), side)
        )
        return records | "Collect" >> beam.combiners.ToList() | "Commit" >> beam.Map(_finalize, side, plan)
