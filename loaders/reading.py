"""Reading planned samples out of shards: a bounded local cache for remote shards, and one pread per field."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Sequence, Set
from typing import Any, NamedTuple

import numpy as np

from shards import storage
from shards.errors import ShardFormatError
from shards.idx import parse_index
from shards.keys import split_member_name

__all__ = ["ShardCache", "SampleReader", "ArrowSampleReader"]


class ShardCache:
    """Local copies of remote shards, at most `max_bytes` on disk, least recently used evicted first.

    Local shards are used in place. A remote shard is downloaded whole (one streamed GET) the first time it is
    needed, or ahead of time by `prefetch`, so later epochs read local disk.
    """

    def __init__(self, cache_dir: str | None, max_bytes: int):
        import tempfile

        self._dir = cache_dir or os.path.join(tempfile.gettempdir(), "shardkit-cache")
        self._max = max_bytes
        self._lock = threading.Lock()
        self._inflight: dict[str, threading.Event] = {}
        self.bytes_fetched = 0

    def path(self, url: str, size: int) -> str:
        if storage.is_local(url):
            return storage.local_path(url)
        name = hashlib.sha256(url.encode()).hexdigest()[:24] + "-" + url.rsplit("/", 1)[-1]
        local = os.path.join(self._dir, name)
        with self._lock:
            event = self._inflight.get(local)
            mine = event is None and not (os.path.exists(local) and os.path.getsize(local) == size)
            if mine:
                event = self._inflight[local] = threading.Event()
        if not mine:
            if event is not None:
                event.wait()
            try:
                os.utime(local)  # recently used
                return local
            except FileNotFoundError:  # another rank sharing this cache evicted it meanwhile: fetch it again
                return self.path(url, size)
        try:
            os.makedirs(self._dir, exist_ok=True)
            # ranks of one node share the directory: a lock per shard makes one of them fetch it, and the others
            # find it there when they get the lock
            with open(f"{local}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if os.path.exists(local) and os.path.getsize(local) == size:
                    os.utime(local)
                    return local
                self._evict(size)
                tmp = f"{local}.part-{os.getpid()}-{threading.get_ident()}"
                with storage.open_read(url, block_size=8 << 20) as src, open(tmp, "wb") as dst:
                    while chunk := src.read(8 << 20):
                        dst.write(chunk)
                        self.bytes_fetched += len(chunk)
                os.replace(tmp, local)
        except FileNotFoundError:
            raise ShardFormatError("shard is missing", url=url) from None
        finally:
            with self._lock:
                self._inflight.pop(local).set()
        return local

    def _evict(self, incoming: int) -> None:
        """Remove least recently used copies until `incoming` fits. Ranks of one node may share the directory,
        so a file can vanish between listing and removal: that is not an error."""
        if not os.path.isdir(self._dir):
            return
        files = []
        for name in os.listdir(self._dir):
            if ".part-" in name or name.endswith(".lock"):
                continue
            try:
                st = os.stat(os.path.join(self._dir, name))
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, os.path.join(self._dir, name)))
        files.sort()
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total + incoming <= self._max:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size

    def prefetch(self, jobs: Sequence[tuple[str, int]]) -> threading.Thread:
        """Download shards in the background, in the order they will be read."""

        def run() -> None:
            for url, size in jobs:
                if not storage.is_local(url):
                    try:
                        self.path(url, size)
                    except Exception:  # the reader raises a clear error when it gets there
                        return

        t = threading.Thread(target=run, name="shard-prefetch", daemon=True)
        t.start()
        return t


class SampleReader:
    """Reads the fields of planned samples: the shard's index is parsed once, each field is one pread."""

    def __init__(self, split_url: str, manifest: dict[str, Any], cache: ShardCache):
        self.split_url = split_url
        self.entries = [e for e in manifest["shards"] if e["path"].endswith(".tar")]
        self.urls = [storage.join(split_url, e["path"]) for e in self.entries]
        self._cache = cache
        self._index: dict[int, list] = {}
        self._fds: dict[int, int] = {}
        self._spans: dict[tuple[int, tuple[str, ...]], list[tuple[tuple[int, int], ...]]] = {}

    def sizes(self) -> list[int]:
        return [e["num_samples"] for e in self.entries]

    def _members(self, shard: int) -> list:
        if shard not in self._index:
            e = self.entries[shard]
            idx_url = storage.join(self.split_url, e["idx"])
            try:
                self._index[shard] = parse_index(storage.read_bytes(idx_url), url=idx_url)
            except FileNotFoundError:
                raise ShardFormatError("index file is missing", url=idx_url) from None
        return self._index[shard]

    def _fd(self, shard: int) -> int:
        if shard not in self._fds:
            path = self._cache.path(self.urls[shard], self.entries[shard]["num_bytes"])
            try:
                self._fds[shard] = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise ShardFormatError("shard is missing", url=self.urls[shard]) from None
        return self._fds[shard]

    def key(self, shard: int, sample: int) -> str:
        return split_member_name(self._members(shard)[sample][0].name)[0]

    def _field_spans(self, shard: int, exts: tuple[str, ...]) -> list[tuple[tuple[int, int], ...]]:
        """Per sample, (offset, size) of each wanted field: resolved once per shard, so a read is a pread each."""
        spans = self._spans.get((shard, exts))
        if spans is None:
            spans = []
            for members in self._members(shard):
                by_ext = {split_member_name(m.name)[1]: (m.offset, m.size) for m in members}
                missing = [e for e in exts if e not in by_ext]
                if missing:
                    key = split_member_name(members[0].name)[0]
                    raise ShardFormatError(f"sample {key!r} has no field(s) {missing}", url=self.urls[shard])
                spans.append(tuple(by_ext[e] for e in exts))
            self._spans[(shard, exts)] = spans
        return spans

    def read(self, shard: int, sample: int, exts: Sequence[str]) -> list[bytes]:
        spans = self._field_spans(shard, tuple(exts))
        if sample >= len(spans):
            raise ShardFormatError(f"index lists {len(spans)} samples, the plan wants #{sample}", url=self.urls[shard])
        fd = self._fd(shard)
        out = []
        for offset, size in spans[sample]:
            data = os.pread(fd, size, offset)
            if len(data) != size:
                raise ShardFormatError(
                    f"sample {self.key(shard, sample)!r}: shard ends early (truncated?)", url=self.urls[shard]
                )
            out.append(data)
        return out

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class Ragged(NamedTuple):
    """A list column of a batch in two arrays: every row's values one after another (plan order), and each row's
    count."""

    values: np.ndarray
    lengths: np.ndarray

    def row_ids(self) -> np.ndarray:
        """For each value, the batch row it belongs to."""
        return np.repeat(np.arange(len(self.lengths)), self.lengths)

    @classmethod
    def of_buffers(cls, buffers: Sequence[bytes], dtype: str) -> Ragged:
        """From one buffer of packed values per row (a tar member such as `<key>.genres`, int32 little-endian)."""
        itemsize = np.dtype(dtype).itemsize
        return cls(np.frombuffer(b"".join(buffers), dtype), np.array([len(b) // itemsize for b in buffers], np.int64))


def _gather_ragged(n: int, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> Ragged:
    """One `Ragged` from (batch rows, value starts, lengths, flat values) per record batch, with no loop per row."""
    lengths = np.zeros(n, np.int64)
    for dest, _, count, _ in parts:
        lengths[dest] = count
    out_start = np.concatenate([[0], np.cumsum(lengths)])
    values = np.empty(int(out_start[-1]), parts[0][3].dtype if parts else np.int64)
    for dest, start, count, flat in parts:
        within = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)  # 0.. inside each row
        values[np.repeat(out_start[dest], count) + within] = flat[np.repeat(start, count) + within]
    return Ragged(values, lengths)


class ArrowSampleReader:
    """Reads planned rows of Arrow IPC shards, memory-mapped from local disk (remote shards via the cache), a batch
    at a time (`read_batch`) from zero-copy NumPy views of each record batch's columns."""

    def __init__(self, split_url: str, manifest: dict[str, Any], cache: ShardCache, key_column: str = "id"):
        self.split_url = split_url
        self.entries = [e for e in manifest["shards"] if e["path"].endswith(".arrow")]
        self.urls = [storage.join(split_url, e["path"]) for e in self.entries]
        self._cache = cache
        self._key = key_column
        self._files: dict[int, Any] = {}
        self._starts: dict[int, list[int]] = {}
        self._colviews: dict[tuple[int, str], list[tuple[Any, ...]]] = {}

    def sizes(self) -> list[int]:
        return [e["num_samples"] for e in self.entries]

    def _file(self, shard: int):
        if shard not in self._files:
            import pyarrow as pa

            path = self._cache.path(self.urls[shard], self.entries[shard]["num_bytes"])
            try:
                reader = pa.ipc.open_file(pa.memory_map(path, "r"))
            except FileNotFoundError:
                raise ShardFormatError("shard is missing", url=self.urls[shard]) from None
            except (pa.ArrowInvalid, OSError) as e:
                raise ShardFormatError(f"not a readable Arrow IPC file: {e}", url=self.urls[shard]) from None
            counts = [reader.get_batch(b).num_rows for b in range(reader.num_record_batches)]
            self._starts[shard] = np.cumsum([0, *counts]).tolist()
            self._files[shard] = reader
        return self._files[shard]

    def key(self, shard: int, sample: int) -> str:
        import bisect

        self._file(shard)
        starts = self._starts[shard]
        b = bisect.bisect_right(starts, sample) - 1
        return str(self._views(shard, self._key)[b][1][sample - starts[b]])

    def _views(self, shard: int, name: str) -> list[tuple[Any, ...]]:
        """Per record batch of a shard, zero-copy NumPy views of one column over the memory-mapped file:
        ("fixed", 2-D values) or ("var", flat values, offsets) or ("py", list of Python values)."""
        key = (shard, name)
        if key not in self._colviews:
            import pyarrow as pa

            reader = self._file(shard)
            views = []
            for b in range(reader.num_record_batches):
                col = reader.get_batch(b).column(name)
                t = col.type
                if pa.types.is_fixed_size_list(t):
                    flat = col.values.to_numpy(zero_copy_only=False)[col.offset * t.list_size :]
                    views.append(("fixed", flat[: len(col) * t.list_size].reshape(len(col), t.list_size)))
                elif pa.types.is_list(t):
                    views.append(("var", col.values.to_numpy(zero_copy_only=False), col.offsets.to_numpy()))
                elif pa.types.is_binary(t):
                    offsets = np.frombuffer(col.buffers()[1], np.int32)[col.offset : col.offset + len(col) + 1]
                    views.append(("var", np.frombuffer(col.buffers()[2] or b"", np.uint8), offsets))
                else:
                    views.append(("py", col.to_pylist()))
            self._colviews[key] = views
        return self._colviews[key]

    def read_batch(
        self, shards: np.ndarray, samples: np.ndarray, fields: Sequence[str], ragged: Set[str] = frozenset()
    ) -> list[Any]:
        """Per field, the values of planned rows in plan order, gathered from zero-copy views of the memory-mapped
        record batches: a fixed-size list column as one 2-D array (a row per sample), a list column named in
        `ragged` as one `Ragged`, other lists and binaries as a list of arrays, other columns as Python values."""
        n = len(shards)
        out: list[Any] = [None] * len(fields)
        pieces: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}  # ragged field -> parts
        for shard in np.unique(shards).tolist():
            where = np.flatnonzero(shards == shard)
            rows = samples[where]
            self._file(shard)
            starts = np.asarray(self._starts[shard])
            if rows.size and (rows.min() < 0 or rows.max() >= starts[-1]):
                raise ShardFormatError(f"holds {starts[-1]} rows, the plan wants #{rows.max()}", url=self.urls[shard])
            batch_of = np.searchsorted(starts, rows, side="right") - 1
            local = rows - starts[batch_of]
            groups = [(b, np.flatnonzero(batch_of == b)) for b in np.unique(batch_of).tolist()]
            for f, name in enumerate(fields):
                views = self._views(shard, name)
                for b, sel in groups:
                    view, dest, at = views[b], where[sel], local[sel]
                    if view[0] == "fixed":
                        if out[f] is None:
                            out[f] = np.empty((n, view[1].shape[1]), view[1].dtype)
                        out[f][dest] = view[1][at]
                    elif view[0] == "var" and name in ragged:
                        flat, offsets = view[1], view[2]
                        pieces.setdefault(f, []).append((dest, offsets[at], offsets[at + 1] - offsets[at], flat))
                    else:
                        if out[f] is None:
                            out[f] = [None] * n
                        if view[0] == "var":
                            flat, offsets = view[1], view[2]
                            for d, r in zip(dest.tolist(), at.tolist(), strict=True):
                                out[f][d] = flat[offsets[r] : offsets[r + 1]]
                        else:
                            for d, r in zip(dest.tolist(), at.tolist(), strict=True):
                                out[f][d] = view[1][r]
        for f, parts in pieces.items():
            out[f] = _gather_ragged(n, parts)
        return out

    def close(self) -> None:
        self._files.clear()
        self._colviews.clear()
