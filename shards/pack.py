"""`shards pack`: any folder of files becomes shuffled WebDataset shards with a manifest.

Files with the same stem form one sample and the extension is the field (`cat1.jpg` + `cat1.cls` -> sample
`cat1` with fields `jpg`, `cls`). Files in subfolders get the folder names joined with '__' in their key
(`train/n01/x.jpg` -> `train__n01__x`). Inputs that cannot become a sample go to quarantine with a reason.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import math
import mimetypes
import multiprocessing as mp
import os
import threading
from collections.abc import Iterator
from typing import Any

from shards import storage
from shards.errors import SampleKeyError
from shards.keys import shuffle_hash, split_member_name, validate_ext, validate_key
from shards.manifest import build_manifest, write_manifest
from shards.publish import write_tar_shard
from shards.quarantine import QUARANTINE_NAME, dumps_quarantine, quarantine_entry

__all__ = ["PackConfig", "pack_folder", "assign_shards"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class PackConfig:
    shard_size: int = 256_000_000
    seed: int = 0
    fields: tuple[str, ...] | None = None  # required fields; default: those every sample has
    dataset: str | None = None
    split: str | None = None
    workers: int = 2  # shards written at once, each in its own process


@dataclasses.dataclass
class _Sample:
    key: str
    files: dict[str, str]  # ext -> path
    nbytes: int


def assign_shards(sizes: list[int], shard_size: int) -> list[int]:
    """Start index of each shard in a list of sample sizes, cutting at even shares of the total bytes."""
    if not sizes:
        return []
    total = sum(sizes)
    n = max(1, min(len(sizes), math.ceil(total / shard_size)))
    starts, acc, target = [0], 0, total / n
    for i, s in enumerate(sizes):
        if acc >= target * len(starts) and len(starts) < n and i > starts[-1]:
            starts.append(i)
        acc += s
    return starts


def _walk(root: str, prefix: str = "") -> Iterator[tuple[str, str, str, int | None]]:
    """(key prefix, name, path, size) for every entry under root in sorted order; size None: not a regular file."""
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.is_dir():
            yield from _walk(e.path, f"{prefix}{e.name}__")
        else:
            yield prefix, e.name, e.path, e.stat().st_size if e.is_file() else None


def _scan(root: str, quarantine: list[dict[str, str]]) -> list[_Sample]:
    samples: dict[str, _Sample] = {}
    for prefix, name, path, size in _walk(root):
        stem, ext = split_member_name(name)
        key = prefix + stem
        try:
            if size is None:
                raise SampleKeyError(f"{name!r} is not a regular file (a FIFO, socket, device or broken link)")
            if not stem:
                raise SampleKeyError(f"hidden file {name!r} has no stem to use as a key")
            validate_key(key, url=root)
            validate_ext(ext, key=key, url=root)
            if len(key) + len(ext) >= 100 and len(f"{key}.{ext}".encode()) > 100:
                raise SampleKeyError(f"member name {key}.{ext} is longer than the 100 bytes a tar name holds")
        except SampleKeyError as e:
            quarantine.append(quarantine_entry(key=key, source=path, stage="scan", reason=str(e)))
            continue
        s = samples.get(key)
        if s is None:
            s = samples[key] = _Sample(key, {}, 0)
        s.files[ext] = path
        s.nbytes += size
    return list(samples.values())


class _Reader:
    """Reads whole files into one reused buffer: no fresh pages (and page faults) per file, no extra copy."""

    def __init__(self) -> None:
        self._buf = bytearray(4 << 20)

    def read_sample(self, files: dict[str, str]) -> dict[str, memoryview]:
        opened: list[tuple[str, int, int]] = []
        try:
            total = 0
            for ext, path in files.items():
                fd = os.open(path, os.O_RDONLY)
                opened.append((ext, fd, os.fstat(fd).st_size))
                total += opened[-1][2]
            if total > len(self._buf):
                self._buf = bytearray(total)
            view, pos, out = memoryview(self._buf), 0, {}
            for ext, fd, size in opened:
                end = pos + size
                got = pos + os.readv(fd, [view[pos:end]])
                while got < end:  # short reads happen on some filesystems
                    n = os.readv(fd, [view[got:end]])
                    if n == 0:
                        raise OSError(f"{files[ext]} shrank while being read")
                    got += n
                out[ext], pos = view[pos:end], end
            return out
        finally:
            for _, fd, _ in opened:
                os.close(fd)


def _read_samples(
    batch: list[_Sample], quarantine: list[dict[str, str]]
) -> Iterator[tuple[str, dict[str, memoryview]]]:
    """Yield each sample's fields as views of one reused buffer, valid until the next sample is asked for."""
    reader = _Reader()
    for s in batch:
        try:
            data = reader.read_sample(s.files)
        except OSError as e:
            source = next(iter(s.files.values()))
            quarantine.append(quarantine_entry(key=s.key, source=source, stage="read", reason=f"unreadable: {e}"))
            continue
        yield s.key, data


def _write_shard_job(
    dst: str, index: int, batch: list[_Sample], fields: list[str], options: dict[str, dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Write one shard (in a worker process); return its manifest entry and what it had to quarantine."""
    for protocol, opts in options.items():
        storage.configure(protocol, **opts)
    quarantine: list[dict[str, str]] = []
    entry = write_tar_shard(dst, index, _read_samples(batch, quarantine), fields=fields)
    return entry, quarantine


def _process_pool(workers: int) -> cf.ProcessPoolExecutor:
    """Shard writers run in processes: their per-sample Python work would otherwise contend for the GIL.

    `fork` starts fastest but is unsafe once the parent runs threads (s3fs keeps an event-loop thread),
    so a multi-threaded parent gets `forkserver` instead.
    """
    methods = mp.get_all_start_methods()
    method = (
        "fork"
        if threading.active_count() == 1 and "fork" in methods
        else ("forkserver" if "forkserver" in methods else "spawn")
    )
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context(method))


def pack_folder(src: str, dst: str, config: PackConfig = PackConfig()) -> dict[str, Any]:
    """Pack folder `src` into the split at URL `dst`; return the manifest (written last)."""
    if not os.path.isdir(src):
        raise FileNotFoundError(f"{src}: not a folder")
    where = storage.overlap(src, dst)
    if where:
        raise ValueError(
            f"{dst} {where} the folder {src}: the shards would be written into what is being packed "
            "(and packed again by a re-run); choose a URL outside it"
        )
    quarantine: list[dict[str, str]] = []
    samples = _scan(src, quarantine)
    inputs_seen = len(samples) + len(quarantine)
    if config.fields is not None:
        required = set(config.fields)
    else:
        required = set.intersection(*(set(s.files) for s in samples)) if samples else set()
    if samples and not required:
        raise ValueError(f"{src}: the samples share no field; name the required ones with --fields")
    kept = []
    for s in samples:
        missing = required - set(s.files)
        if missing:
            reason = f"lacks required field(s) {sorted(missing)}"
            quarantine.append(quarantine_entry(key=s.key, source=src, stage="scan", reason=reason))
        else:
            kept.append(s)
    if not kept:
        raise ValueError(f"{src}: no sample could be packed ({len(quarantine)} inputs quarantined)")
    kept.sort(key=lambda s: (shuffle_hash(s.key, config.seed), s.key))
    starts = assign_shards([s.nbytes for s in kept], config.shard_size)
    bounds = list(zip(starts, [*starts[1:], len(kept)], strict=True))
    jobs = [(dst, i, kept[a:b], sorted(required), storage.configured()) for i, (a, b) in enumerate(bounds)]
    workers = min(config.workers, len(jobs))
    if workers <= 1:
        results = [_write_shard_job(*job) for job in jobs]
    else:
        with _process_pool(workers) as pool:
            results = list(pool.map(_write_shard_job, *zip(*jobs, strict=True)))
    entries = [entry for entry, _ in results]
    for _, lost in results:
        quarantine.extend(lost)
    all_fields = sorted({ext for s in kept for ext in s.files})
    storage.write_bytes(storage.join(dst, QUARANTINE_NAME), dumps_quarantine(quarantine))
    manifest = build_manifest(
        dataset=config.dataset or os.path.basename(os.path.abspath(src)),
        split=config.split or os.path.basename(dst.rstrip("/")) or "train",
        fields={ext: mimetypes.guess_type("x." + ext)[0] or "bytes" for ext in sorted(required)},
        optional_fields={
            ext: mimetypes.guess_type("x." + ext)[0] or "bytes" for ext in all_fields if ext not in required
        },
        shards=entries,
        classes=None,
        quarantine_count=len(quarantine),
        source={"url": os.path.abspath(src), "layout": "folder", "inputs_seen": inputs_seen},
        params={"shard_size": config.shard_size, "seed": config.seed, "fields": sorted(required)},
    )
    write_manifest(dst, manifest)
    return manifest
