"""Writing one shard from its pointers (no Beam here, so worker processes stay light): ranged reads, the
dataset's encoder, quarantine, the progress record, and reuse of a shard an earlier run already committed."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from pipelines.common.errors import BadInput
from pipelines.common.options import use_storage_options
from pipelines.common.plan import PROGRESS_DIR, SplitPlan
from pipelines.common.records import Pointer
from pipelines.common.usersamples import Expanded
from shards import storage
from shards.keys import shuffle_hash
from shards.publish import sha256_of, shard_name, write_arrow_shard, write_tar_shard
from shards.quarantine import quarantine_entry

__all__ = ["dead_writers_inputs", "remove_notes", "PROGRESS_DIR", "Encoder", "die_with_job", "write_shard"]

Encoder = Callable[[Pointer, bytes], dict[str, bytes]]


class _RangeReader:
    """Ranged reads with a few files kept open (an archive read in place serves many pointers).

    Local files are read with os.pread on a cached descriptor (one system call per sample); other stores
    through their fsspec file.
    """

    def __init__(self, keep: int = 4):
        self._open: dict[str, Any] = {}
        self._keep = keep

    def read(self, url: str, offset: int, length: int) -> bytes:
        f = self._open.get(url)
        if f is None:
            if len(self._open) >= self._keep:
                old = self._open.pop(next(iter(self._open)))
                os.close(old) if isinstance(old, int) else old.close()
            try:
                if storage.is_local(url):
                    f = os.open(storage.local_path(url), os.O_RDONLY)
                else:
                    f = storage.open_read(url, block_size=1 << 20)
            except OSError as e:
                raise BadInput(f"unreadable: {e}", stage="read") from None
            self._open[url] = f
        if isinstance(f, int):
            data = os.pread(f, length, offset)
            while 0 < len(data) < length:  # short reads happen on some filesystems
                more = os.pread(f, length - len(data), offset + len(data))
                if not more:
                    break
                data += more
        else:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise BadInput(f"input ends early: wanted {length} bytes at offset {offset}, got {len(data)}", stage="read")
        return data

    def close(self) -> None:
        for f in self._open.values():
            os.close(f) if isinstance(f, int) else f.close()
        self._open.clear()


_NOTE: list[Any] = []  # [fd] of this writer process's "input being converted" note (pool writers only)


def notes_dir(job_pid: int) -> str:
    """Where the writers of job `job_pid` note the input each one is converting (a local temp folder)."""
    import tempfile

    return os.path.join(tempfile.gettempdir(), f"shardkit-writers-{job_pid}")


def _note_input(text: str) -> None:
    """Record the input this writer is about to convert: if the process dies in it (a segfault in native code,
    os.abort(), the OOM killer), the job names that input instead of "process pool terminated abruptly". One
    pwrite of a few hundred bytes on an open descriptor per input (~2 us)."""
    if _NOTE:
        data = text.encode()[:1000]
        os.pwrite(_NOTE[0], data + b" " * (1024 - len(data)), 0)


def dead_writers_inputs(folder: str) -> list[str]:
    """The inputs the dead writers noting into `folder` were converting; their notes are removed."""
    from shards.procs import alive

    found = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if name.isdigit() and not alive(int(name)):
            with open(path, "rb") as f:
                found.append(f.read().decode(errors="replace").strip())
            os.remove(path)
    return [x for x in found if x]


def remove_notes(folder: str) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def die_with_job(job_pid: int, notes: str | None = None) -> None:
    """Initializer of the writer pools: a daemon thread ends this writer within half a second of the job's process
    going, however it went (SIGKILL, SIGTERM, Ctrl-C). Without it a killed job's writers lived on for minutes,
    some still writing shards: their parent is the forkserver, which stays while any of its children holds the
    "alive" pipe that multiprocessing hands every child, and the pool's queues never report EOF because every
    writer holds both ends. Once the writers are gone the forkserver and the resource tracker exit too."""
    import threading
    import time

    from shards.procs import alive

    def watch() -> None:
        while alive(job_pid):
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="job-watchdog", daemon=True).start()
    if notes:  # the folder the job reads when a writer dies (the launcher chose it: its temp dir)
        os.makedirs(notes, exist_ok=True)
        _NOTE.append(os.open(os.path.join(notes, str(os.getpid())), os.O_RDWR | os.O_CREAT, 0o600))


def _source(p: Pointer) -> str:
    """Where a quarantined input is, as the user has it: the listing's own words when it gave them (an archive
    and its member, a CSV file and line), else the URL and byte offset."""
    return p.meta.get("source") or f"{p.url}@{p.offset}"


def _fingerprint(plan: SplitPlan, pointers: list[Pointer]) -> str:
    h = hashlib.sha256(json.dumps([plan.params, plan.fields], sort_keys=True).encode())
    for p in pointers:
        h.update(json.dumps([p.key, p.url, p.offset, p.length, p.meta], sort_keys=True).encode())
    return h.hexdigest()


def _reuse(plan: SplitPlan, progress_url: str, fingerprint: str) -> dict[str, Any] | None:
    try:
        record = json.loads(storage.read_bytes(progress_url))
    except (FileNotFoundError, ValueError):
        return None
    entry = record.get("entry")
    if record.get("fingerprint") != fingerprint:
        return None
    if record.get("side") and not storage.exists(storage.join(plan.split_url, record["side"])):
        return None
    if entry is not None:
        tar = storage.join(plan.split_url, entry["path"])
        idx = storage.join(plan.split_url, entry["idx"]) if "idx" in entry else None
        try:
            if (idx and not storage.exists(idx)) or sha256_of(tar) != (entry["sha256"], entry["num_bytes"]):
                return None
        except FileNotFoundError:
            return None
    return record


def _write_side_table(plan: SplitPlan, index: int, rows: list[tuple[str, bytes]]) -> str:
    """The shard's rows of the dataset's side table, as `<split>/annotations/shard-NNNNNN.parquet`."""
    import importlib

    import pyarrow.parquet as pq

    module, _, name = plan.side_table.partition(":")
    table = getattr(importlib.import_module(module), name)(rows)
    path = f"annotations/{shard_name(index, 'parquet')}"
    with storage.atomic_write(storage.join(plan.split_url, path)) as f:
        pq.write_table(table, f)
    return path


def _named(key: str, sample: Any, tar: bool) -> BadInput | None:
    """A tar member is `<key>.<ext>` in a ustar name of at most 100 bytes: a longer one is this input's quarantine
    reason, found before the writer would fail on it (and the job with it)."""
    if not tar or not isinstance(sample, dict):
        return None
    for ext in sample:
        name = f"{key}.{ext}".encode()
        if len(name) > 100:
            return BadInput(
                f"member name {key}.{ext} is {len(name)} bytes, more than the 100 a tar name holds: use a shorter key",
                stage="list",
            )
    return None


class _Samples:
    """The samples of one shard, made from its pointers in order (a generator the shard writer drains), and what
    making them found: quarantine entries, keys, input checksums, side-table rows."""

    def __init__(self, plan: SplitPlan, encode: Encoder, pointers: list[Pointer]):
        self.plan, self.encode, self.pointers = plan, encode, pointers
        self.tar = plan.format != "arrow"
        self.reader = _RangeReader()
        self.quarantine: list[dict[str, Any]] = []
        self.keys: set[str] = set()
        # CRC32C of inputs read from offset 0 (a watcher's plan asks: it records what it converted; computed here
        # on bytes read anyway, since a separate pass over a 2 GB backlog cost the watcher 1.3-1.9 s of a 6 s job)
        self.checksums: dict[str, str] | None = {} if plan.input_checksums else None
        if plan.input_checksums:
            import google_crc32c

            self._crc = google_crc32c.value
        self.side_rows: list[tuple[str, bytes]] = []  # (key, json) of written samples, for the side table
        self.unread: set[str] = set()  # inputs that could not be read (gone, truncated since listing)
        self.expanded = 0  # outcomes (samples or quarantine entries) beyond one per input
        self.made: dict[str, str] = {}  # key -> input, of samples a user's function named

    def _held(self, key: str, p: Pointer, e: BadInput) -> None:
        self.quarantine.append(
            quarantine_entry(key=key, source=_source(p), stage=e.stage, reason=str(e), data=self._data(p))
        )

    def _data(self, p: Pointer) -> dict[str, Any] | None:
        """Where a quarantined input's bytes are, for `shards view` to draw them: only bytes of the user's own
        input (not a job's temporary, e.g. a .tar.gz staged as a plain tar under the output: gone after the job)."""
        if not p.length or p.url.startswith(self.plan.split_url.rstrip("/").rsplit("/", 1)[0] + "/"):
            return None
        data = {"url": p.url, "offset": p.offset, "length": p.length}
        if p.meta.get("inflate", False) is not False:
            data["deflated"] = True
        return data

    def _encoded(self, p: Pointer) -> Any:
        """The pointer's sample (or a user function's samples); BadInput when it cannot become one."""
        if "error" in p.meta:
            raise BadInput(p.meta["error"], stage=p.meta.get("stage", "list"))
        if p.key in self.keys:
            raise BadInput(f"duplicate key: another input of this split is also named {p.key}", stage="list")
        _note_input(f"{_source(p)} (key {p.key})")
        data = self.reader.read(p.url, p.offset, p.length) if p.length else b""
        if self.checksums is not None and p.offset == 0:  # a whole file, for the watcher's ledger
            self.checksums[p.url] = f"{self._crc(data):08x}"
        sample = self.encode(p, data)
        if self.tar and not isinstance(sample, Expanded) and (bad := _named(p.key, sample, self.tar)):
            raise bad
        return sample

    def _each(self, p: Pointer, samples: Expanded) -> Iterator[tuple[str, dict[str, bytes]]]:
        """A user's function: one input, several samples (pipelines.convert)."""
        self.expanded += len(samples) - 1
        for key, one in samples:
            if not isinstance(one, BadInput) and key in self.keys:
                one = BadInput(f"duplicate key: another sample of this split is also named {key}", stage="convert")
            if not isinstance(one, BadInput):
                one = _named(key, one, self.tar) or one
            if isinstance(one, BadInput):
                self._held(key, p, one)
                continue
            self.keys.add(key)
            self.made[key] = _source(p)
            yield key, one

    def __iter__(self) -> Iterator[tuple[str, dict[str, bytes]]]:
        for p in self.pointers:
            try:
                sample = self._encoded(p)
            except BadInput as e:
                self._held(p.key, p, e)
                if self.checksums is not None and e.stage == "read":  # not converted: the watcher tries it again
                    self.unread.add(p.url)
                continue
            if isinstance(sample, Expanded):
                yield from self._each(p, sample)
                continue
            self.keys.add(p.key)
            if self.plan.side_table:
                self.side_rows.append((p.key, sample["json"]))
            yield p.key, sample


def write_shard(plan: SplitPlan, encode: Encoder, element: tuple[int, list[Pointer]]) -> tuple[dict[str, Any], bool]:
    """Write shard `index` of a split from its pointers; return (progress record, whether it was reused).

    A shard that an earlier run committed for the same pointers and options, and whose bytes still hash to the
    recorded sha256, is kept as it is. Inputs that cannot become samples are quarantined with a reason.
    """
    index, pointers = element
    use_storage_options(plan.storage_options)
    pointers = sorted(pointers, key=lambda p: (shuffle_hash(p.key, plan.seed), p.key))
    fingerprint = _fingerprint(plan, pointers)
    progress_url = storage.join(plan.split_url, PROGRESS_DIR, shard_name(index, "json"))
    record = _reuse(plan, progress_url, fingerprint)
    if record is not None:
        return record, True
    made = _Samples(plan, encode, pointers)
    try:
        if plan.format == "arrow":  # each sample is one row: {column: value}
            from shards.arrow import schema_from_json

            rows = (sample for _, sample in made)
            entry = write_arrow_shard(plan.split_url, index, rows, schema=schema_from_json(plan.fields))
        else:
            entry = write_tar_shard(plan.split_url, index, iter(made), fields=plan.fields)
    finally:
        made.reader.close()
    if entry["num_samples"] == 0:  # everything in this shard was quarantined
        storage.remove(storage.join(plan.split_url, entry["path"]))
        if "idx" in entry:
            storage.remove(storage.join(plan.split_url, entry["idx"]))
        entry = None
    record = {"index": index, "fingerprint": fingerprint, "entry": entry, "quarantine": made.quarantine}
    if plan.side_table and entry is not None:
        record["side"] = _write_side_table(plan, index, made.side_rows)
    record["seen"] = len(pointers)
    if made.expanded:
        record["expanded"] = made.expanded
    if made.made:  # keys are known only once the function ran: the finaliser checks them across shards
        record["keys"] = made.made
    if made.checksums is not None:
        record["crc32c"] = {u: c for u, c in made.checksums.items() if u not in made.unread}
        if made.unread:
            record["unread"] = sorted(made.unread)
    storage.write_bytes(progress_url, json.dumps(record, sort_keys=True).encode())
    return record, False
