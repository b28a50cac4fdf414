"""A split that grows by generations (manifest version 2): publish one atomically, pin one, retire and collect.

Layout of such a split (`<split>/`):

    manifest.json                    the newest generation's snapshot: the commit point readers follow
    generations/000007.json          immutable snapshot of the split as generation 7 published it (a run pins it)
    generations/000007.quarantine.jsonl   every quarantine entry of the live generations at 7 (immutable)
    inc-<id>/shard-NNNNNN.{tar,idx,arrow}  the shards of one increment (never rewritten)
    inc-<id>/inputs.jsonl            what it converted: one line per raw input file (url, size, tag, crc32c, keys)
    inc-<id>/quarantine.jsonl        its own quarantine entries
    cmp-<id>/...                     a compaction's shards, inputs and quarantine (those of the generations it
                                     replaced)
    _lock                            held while a generation is published (one writer at a time)

Publishing writes the folder's files, then the snapshot, then `manifest.json` (one atomic write): a reader sees
the previous manifest or the new one, never a mix. Generations are numbered when they are published, under the
lock, so a watcher and a compaction running side by side never take the same number.

A compaction retires the generations it replaces: their folders are removed by `collect` only once `grace`
seconds (default 24 h) have passed since it published, so a reader that planned its epoch from an older manifest
finishes the epoch; a run pinned to a generation older than that must move to a newer one (a `follow=True`
loader does so at each epoch boundary).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from shards import storage
from shards.errors import GenerationCollected, ManifestError, ManifestMissing
from shards.manifest import build_manifest, encode_manifest, parse_manifest, read_manifest, validate_manifest
from shards.quarantine import dumps_quarantine, read_quarantine

__all__ = [
    "DEFAULT_GRACE",
    "COMPACT_LOCK",
    "COMPACT_STALE",
    "LockedError",
    "live_holder",
    "collect",
    "generation_of",
    "new_folder",
    "publish_generation",
    "renew_lock",
    "read_generation",
    "snapshot_path",
    "split_lock",
]

VERSION = 2
DEFAULT_GRACE = 24 * 3600.0
LOCK_NAME = "_lock"
COMPACT_LOCK = "_compact_lock"  # held by `shards compact` while it writes its cmp-* folder
COMPACT_STALE = 6 * 3600.0
LOCK_STALE = 600.0  # a lock older than this (its holder on another host) is taken over: publishing takes seconds


class LockedError(RuntimeError):
    """Another live process is publishing into the split."""


def snapshot_path(generation: int) -> str:
    return f"generations/{generation:06d}.json"


def new_folder(kind: str) -> str:
    """A fresh folder name for an increment's (`inc`) or a compaction's (`cmp`) files."""
    return f"{kind}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def generation_of(manifest: Mapping[str, Any]) -> int:
    """The generation a manifest is: 0 for a version-1 split (written once by a batch job)."""
    return int(manifest.get("generation", 0))


def read_generation(url: str, generation: int | None = None) -> dict[str, Any]:
    """The split's manifest (`generation=None`: the newest) or the snapshot of one published generation."""
    current = read_manifest(url)
    if generation is None or generation == generation_of(current):
        return current
    if generation > generation_of(current) or generation < 0:
        raise ManifestError(f"{url}: generation {generation} is not published; the newest is {generation_of(current)}")
    split = url.rstrip("/").removesuffix("/manifest.json")
    snap = storage.join(split, snapshot_path(generation))
    try:
        m = parse_manifest(storage.read_bytes(snap), snap, split)
    except FileNotFoundError:
        raise ManifestError(f"{snap}: generation {generation} has no snapshot (never published, or removed)") from None
    retired = {r["generation"]: r for r in current.get("retired", [])}
    gone = [
        g["generation"] for g in m["generations"] if g["generation"] in retired and _collected(retired[g["generation"]])
    ]
    if gone:
        r = retired[gone[0]]
        raise GenerationCollected(
            f"{snap}: generation {generation} reads generation(s) {gone}, compacted into generation {r['by']} and "
            f"collected after the grace period; use generation {r['by']} or newer (the same samples)"
        )
    return m


def _collected(retired: Mapping[str, Any]) -> bool:
    return bool(retired.get("collected"))


def _holder(url: str, stale: float) -> tuple[dict[str, Any], float, bool]:
    """(a lock's record, its age in seconds, whether its holder is gone): gone when the lock is missing or
    unreadable, its process on this host has exited, or on another host it was last renewed over `stale` ago."""
    from shards.procs import alive

    try:
        record = json.loads(storage.read_bytes(url))
    except (FileNotFoundError, ValueError):
        return {}, 0.0, True
    age = time.time() - float(record.get("since", 0))
    if record.get("host") == socket.gethostname():
        return record, age, not alive(int(record.get("pid", 0)))
    return record, age, age > stale


@contextlib.contextmanager
def split_lock(
    split_url: str, owner: str, *, wait: float = 60.0, name: str = LOCK_NAME, stale: float = LOCK_STALE
) -> Iterator[None]:
    """Hold one of the split's locks (`_lock`, the publishing lock, by default; created exclusively: O_EXCL
    locally, a conditional PUT on object stores). A lock whose holder is gone (its process on this host has
    exited, or on another host it was last renewed more than `stale` seconds ago) is taken over; a live holder is
    waited for up to `wait` seconds, then LockedError names it (host, pid, what it is)."""
    url = storage.join(split_url, name)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "owner": owner, "since": time.time()}
    deadline = time.monotonic() + wait
    while not storage.create_exclusive(url, json.dumps(me).encode()):
        record, age, gone = _holder(url, stale)
        if gone:
            with contextlib.suppress(FileNotFoundError):
                storage.remove(url)
            continue
        if time.monotonic() > deadline:
            raise LockedError(
                f"{split_url} is held by {record.get('owner')} (pid {record.get('pid')} on {record.get('host')}, "
                f"for {age:.0f}s); try again when it has finished"
            )
        time.sleep(0.2)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError):  # gone, or not ours to remove
            held = json.loads(storage.read_bytes(url))
            if (held.get("host"), held.get("pid")) == (me["host"], me["pid"]):
                storage.remove(url)


def live_holder(split_url: str, name: str, stale: float = LOCK_STALE) -> dict[str, Any] | None:
    """The record of a lock's holder while it is alive, else None."""
    record, _, gone = _holder(storage.join(split_url, name), stale)
    return None if gone else record


def renew_lock(split_url: str, name: str) -> None:
    """A long-held lock (a watcher's) says it is alive: its time is brought up to now."""
    url = storage.join(split_url, name)
    record = json.loads(storage.read_bytes(url))
    storage.write_bytes(url, json.dumps({**record, "since": time.time()}).encode())


def _quarantine_of(split_url: str, manifest: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if manifest is None or not manifest["quarantine"]["count"]:
        return []
    return read_quarantine(storage.join(split_url, manifest["quarantine"]["path"]))


def publish_generation(
    split_url: str,
    *,
    folder: str,
    kind: str,
    shards: Sequence[Mapping[str, Any]],
    quarantine: Sequence[Mapping[str, Any]],
    inputs_seen: int,
    template: Mapping[str, Any] | None = None,
    replaces: Sequence[int] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish `folder`'s shards (entries with paths relative to the folder) as the split's next generation.

    `quarantine` is what this generation adds (a compaction adds none: it carries the replaced generations').
    `template` gives dataset, split, fields, classes, params, source and extra keys for the first generation;
    later ones inherit them. Call under `split_lock`. Returns the published manifest.
    """
    try:
        previous: dict[str, Any] | None = read_manifest(split_url)
    except ManifestMissing:
        previous = None
    if previous is not None and previous["version"] < VERSION:
        raise ManifestError(f"{split_url}: a version-1 split (written once by a batch job) cannot take generations")
    number = generation_of(previous) + 1 if previous else 1
    base = dict(previous or template or {})
    if not base:
        raise ValueError(f"{split_url}: the first generation needs a template")
    replaced = set(replaces)
    live = [g for g in (previous or {}).get("generations", []) if g["generation"] not in replaced]
    kept = [s for s in (previous or {}).get("shards", []) if s["generation"] not in replaced]
    missing = replaced - {g["generation"] for g in (previous or {}).get("generations", [])}
    if missing:
        raise ManifestError(f"{split_url}: generations {sorted(missing)} to replace are not live")
    carried = [g for g in (previous or {}).get("generations", []) if g["generation"] in replaced]
    own = list(quarantine)
    q_count = len(own) + sum(g["quarantine_count"] for g in carried)
    new_shards = []
    for s in shards:
        entry = {**s, "path": f"{folder}/{s['path']}", "generation": number}
        if "idx" in s:
            entry["idx"] = f"{folder}/{s['idx']}"
        new_shards.append(entry)
    storage.write_bytes(
        storage.join(split_url, folder, "quarantine.jsonl"),
        dumps_quarantine([q for g in carried for q in read_quarantine(storage.join(split_url, g["quarantine"]))] + own),
    )
    gen = {
        "generation": number,
        "kind": kind,
        "folder": folder,
        "published_at": time.time(),
        "num_samples": sum(int(s["num_samples"]) for s in shards),
        "quarantine_count": q_count,
        "inputs_seen": inputs_seen + sum(g["inputs_seen"] for g in carried),
        "shards": len(new_shards),
        "inputs": f"{folder}/inputs.jsonl",
        "quarantine": f"{folder}/quarantine.jsonl",
        "replaces": sorted(replaced),
        **dict(extra or {}),
    }
    generations = [*live, gen]
    cumulative = snapshot_path(number).removesuffix(".json") + ".quarantine.jsonl"
    storage.write_bytes(
        storage.join(split_url, cumulative), dumps_quarantine(_quarantine_of(split_url, previous) + own)
    )
    retired = list(base.get("retired", [])) + [
        {"generation": g["generation"], "folder": g["folder"], "by": number, "at": gen["published_at"]} for g in carried
    ]
    keys = ("dataset", "split", "fields", "classes", "params")
    drop = {
        *keys,
        "format",
        "version",
        "num_samples",
        "shards",
        "quarantine",
        "source",
        "created_by",
        "generation",
        "generations",
        "retired",
    }
    manifest = build_manifest(
        **{k: base[k] for k in keys},
        shards=[*kept, *new_shards],
        source={**base["source"], "inputs_seen": sum(g["inputs_seen"] for g in generations)},
        quarantine_count=sum(g["quarantine_count"] for g in generations),
        **{k: v for k, v in base.items() if k not in drop},
    )
    manifest.update(version=VERSION, generation=number, generations=generations, retired=retired)
    manifest["quarantine"]["path"] = cumulative
    validate_manifest(manifest, url=split_url)
    encoded = encode_manifest(split_url, manifest)
    storage.write_bytes(storage.join(split_url, snapshot_path(number)), encoded)
    storage.write_bytes(storage.join(split_url, "manifest.json"), encoded)  # the commit point
    return manifest


def collect(split_url: str, *, grace: float = DEFAULT_GRACE, now: float | None = None) -> list[str]:
    """Remove the folders of generations retired (compacted) more than `grace` seconds ago; their snapshots stay
    and say so when read. Returns the folders removed. Call under `split_lock`."""
    m = read_manifest(split_url)
    now = time.time() if now is None else now
    removed = []
    changed = False
    for r in m.get("retired", []):
        if not r.get("collected") and now - r["at"] >= grace:
            storage.remove_tree(storage.join(split_url, r["folder"]))
            r["collected"] = now
            removed.append(r["folder"])
            changed = True
    if changed:  # the same generation, with its retired list brought up to date
        storage.write_bytes(storage.join(split_url, "manifest.json"), encode_manifest(split_url, m))
    return removed
