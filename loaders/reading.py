"""Reading planned samples out of shards a batch at a time, with no work per sample beyond a slice.

Tar shards are memory-mapped once per process: every field of a batch is a zero-copy view of the mapped shard,
handed to DALI as it is (`external_source(no_copy=True)`), so the bytes are paged in by DALI's worker threads
while they decode, not by the training process's main thread. Each shard's index is parsed and checked against
the tar once (keys, fields, spans inside the file), and small fields parsed on the host (labels, boxes) are
parsed once per shard, then gathered per batch with NumPy. Arrow shards are memory-mapped and gathered by
column. Remote shards come through `loaders.cache.ShardCache`.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any, NamedTuple

import numpy as np

from loaders.cache import ShardCache, ShardJob
from loaders.entries import ShardEntries
from shards import storage
from shards.errors import ShardFormatError
from shards.idx import parse_index, sample_members
from shards.tario import TarMember, check_indexed_member

__all__ = ["SampleReader", "ArrowSampleReader", "Ragged"]


def _map(path: str, url: str, expected: int) -> np.ndarray:
    """A read-only memory map of a whole shard as a uint8 array; its size must be the manifest's."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ShardFormatError("shard is missing", url=url) from None
    try:
        size = os.fstat(fd).st_size
        if size != expected:
            raise ShardFormatError(f"is {size} bytes, the manifest says {expected} (truncated or replaced?)", url=url)
        return np.frombuffer(mmap.mmap(fd, 0, prot=mmap.PROT_READ), np.uint8) if size else np.zeros(0, np.uint8)
    finally:
        os.close(fd)


class _TarShard(NamedTuple):
    data: np.ndarray  # the mapped tar
    keys: list[str]
    members: list[dict[str, TarMember]]  # per sample: ext -> member (name, offset, size)
    checked: np.ndarray  # per sample: its members' tar headers were checked (`check_indexed_member`)


class SampleReader:
    """Reads planned samples of tar shards, a batch at a time (`read_batch`)."""

    def __init__(self, split_url: str, manifest: dict[str, Any], cache: ShardCache):
        self.split_url = split_url
        self.entries = ShardEntries(split_url, manifest["shards"], ".tar")
        self.urls = self.entries.urls
        self._cache = cache
        self._shards: dict[int, _TarShard] = {}
        self._spans: dict[tuple[int, tuple[str, ...]], tuple[np.ndarray, np.ndarray]] = {}
        self._parsed: dict[tuple[int, str], Any] = {}

    def sizes(self) -> list[int]:
        return self.entries.sizes()

    def job(self, shard: int) -> ShardJob:
        return self.entries.job(shard)

    def _shard(self, shard: int) -> _TarShard:
        if shard not in self._shards:
            url = self.urls[shard]
            idx_url = storage.join(self.split_url, self.entries.get(shard, "idx"))
            try:
                index = parse_index(self._cache.small(idx_url), url=idx_url)
            except FileNotFoundError:
                raise ShardFormatError("index file is missing", url=idx_url) from None
            data = _map(self._cache.path(self.job(shard)), url, self.entries.get(shard, "num_bytes"))
            self._shards[shard] = _indexed(index, len(data), url, data)
        return self._shards[shard]

    def _check(self, shard: int, rows: np.ndarray) -> None:
        """Check the tar headers of these samples' members, those not checked yet (`check_indexed_member`: ~5 us
        a member): only what a batch reads, so opening a shard costs no pass over all of its members."""
        t = self._shard(shard)
        for i in np.unique(rows[~t.checked[rows]]).tolist():
            for m in t.members[i].values():
                check_indexed_member(bytes(t.data[m.offset - 512 : m.offset]), m, url=self.urls[shard])
            t.checked[i] = True

    def key(self, shard: int, sample: int) -> str:
        return self._shard(shard).keys[sample]

    def _field_spans(self, shard: int, exts: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Start and stop byte of each wanted field of every sample (samples x fields): once per shard."""
        spans = self._spans.get((shard, exts))
        if spans is None:
            t = self._shard(shard)
            start = np.empty((len(t.keys), len(exts)), np.int64)
            size = np.empty_like(start)
            for i, members in enumerate(t.members):
                for j, ext in enumerate(exts):
                    if ext not in members:
                        raise ShardFormatError(f"sample {t.keys[i]!r} has no field {ext!r}", url=self.urls[shard])
                    start[i, j], size[i, j] = members[ext].offset, members[ext].size
            spans = self._spans[(shard, exts)] = (start, start + size)
        return spans

    def _parsed_field(self, shard: int, field: str, parse: Callable[[Any], np.ndarray]) -> Any:
        """A host field parsed for every sample of the shard, once: a 2-D array when every sample's value has
        the same shape (gathered per batch by indexing), else a list of arrays."""
        key = (shard, field)
        if key not in self._parsed:
            start, stop = self._field_spans(shard, (field,))
            data = self._shard(shard).data
            try:
                values = [parse(data[a:b]) for a, b in zip(start[:, 0].tolist(), stop[:, 0].tolist(), strict=True)]
            except ValueError as e:
                raise ShardFormatError(f"field {field!r} does not parse: {e}", url=self.urls[shard]) from None
            same = len({(v.shape, v.dtype) for v in values}) == 1
            self._parsed[key] = np.stack(values) if same and values else values
        return self._parsed[key]

    def read_batch(
        self,
        shards: np.ndarray,
        samples: np.ndarray,
        fields: Sequence[str],
        *,
        parsers: Mapping[str, Callable[[Any], np.ndarray]] | None = None,
        ragged: Set[str] = frozenset(),
    ) -> list[Any]:
        """Per field, the planned samples' values in plan order: a list of zero-copy uint8 views of the mapped
        shards, or for a field in `parsers`, its parsed values (one 2-D array where they share a shape)."""
        parsers = parsers or {}
        n = len(shards)
        raw = tuple(f for f in fields if parsers.get(f) is None)
        start, stop = np.empty((n, len(raw)), np.int64), np.empty((n, len(raw)), np.int64)
        parsed: dict[str, Any] = {}
        datas: dict[int, np.ndarray] = {}
        for shard in np.unique(shards).tolist():
            where = np.flatnonzero(shards == shard)
            rows = samples[where]
            if rows.size and rows.max() >= len(self._shard(shard).keys):
                raise ShardFormatError(
                    f"index lists {len(self._shard(shard).keys)} samples, the plan wants #{rows.max()}",
                    url=self.urls[shard],
                )
            self._check(shard, rows)
            datas[shard] = self._shard(shard).data
            if raw:
                a, b = self._field_spans(shard, raw)
                start[where], stop[where] = a[rows], b[rows]
            for f, parse in parsers.items():
                if f in fields and parse is not None:
                    _gather_parsed(parsed, f, self._parsed_field(shard, f, parse), where, rows, n)
        out: list[Any] = []
        shard_list = shards.tolist()
        for f in fields:
            if f in parsed:
                out.append(parsed[f])
                continue
            j = raw.index(f)
            out.append(
                [datas[s][a:b] for s, a, b in zip(shard_list, start[:, j].tolist(), stop[:, j].tolist(), strict=True)]
            )
        return out

    def read(self, shard: int, sample: int, fields: Sequence[str]) -> list[bytes]:
        """One sample's fields as bytes (for code that wants no views; the loaders read whole batches)."""
        one = np.array([shard]), np.array([sample])
        return [bytes(values[0]) for values in self.read_batch(*one, fields)]

    def forget(self, shards: Sequence[int]) -> None:
        """Unmap remote shards the epoch has finished with, so that the cache's evictions free their disk space
        (batches still holding views keep their pages until they go); local shards stay mapped."""
        for s in shards:
            if not storage.is_local(self.urls[s]):
                self._shards.pop(s, None)

    def close(self) -> None:
        self._shards.clear()
        self._spans.clear()
        self._parsed.clear()


def _gather_parsed(parsed: dict[str, Any], f: str, values: Any, where: np.ndarray, rows: np.ndarray, n: int) -> None:
    """Put one shard's parsed values of field `f` at the batch positions `where`: into one 2-D array while every
    shard so far had values of one shape and dtype, else into a list of arrays."""
    have = parsed.get(f)
    if isinstance(values, np.ndarray) and (have is None or isinstance(have, np.ndarray)):
        if have is None:
            have = parsed[f] = np.empty((n, *values.shape[1:]), values.dtype)
        if have.shape[1:] == values.shape[1:] and have.dtype == values.dtype:
            have[where] = values[rows]
            return
    if not isinstance(have, list):  # shapes differ between shards (or within one): one array per sample
        have = parsed[f] = [None] * n if have is None else list(have)
    for d, r in zip(where.tolist(), rows.tolist(), strict=True):
        have[d] = values[r]


def _indexed(index: list, size: int, url: str, data: np.ndarray) -> _TarShard:
    """The index's samples, checked as `verify` checks them: valid keys, one key per sample, spans inside the tar;
    the header before each member (an intact header of a regular file with that name and size) is checked when a
    batch reads the sample (`SampleReader._check`). A hostile or stale index is refused naming the shard and the
    member before any of its bytes reach a batch."""
    keys: list[str] = []
    members: list[dict[str, TarMember]] = []
    for sample in index:
        key, fields = sample_members(sample, size, url=url)
        keys.append(key)
        members.append(fields)
    return _TarShard(data, keys, members, np.zeros(len(keys), bool))


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
        self.entries = ShardEntries(split_url, manifest["shards"], ".arrow")
        self.urls = self.entries.urls
        self._cache = cache
        self._key = key_column
        self._files: dict[int, Any] = {}
        self._starts: dict[int, list[int]] = {}
        self._colviews: dict[tuple[int, str], list[tuple[Any, ...]]] = {}

    def sizes(self) -> list[int]:
        return self.entries.sizes()

    def _file(self, shard: int):
        if shard not in self._files:
            import pyarrow as pa

            path = self._cache.path(self.job(shard))
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

    def job(self, shard: int) -> ShardJob:
        return self.entries.job(shard)

    def read_batch(
        self,
        shards: np.ndarray,
        samples: np.ndarray,
        fields: Sequence[str],
        *,
        parsers: Mapping[str, Callable[[Any], np.ndarray] | None] | None = None,
        ragged: Set[str] = frozenset(),
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
        for f, name in enumerate(fields):
            parse = (parsers or {}).get(name)
            if parse is not None and isinstance(out[f], list):
                out[f] = [parse(v) for v in out[f]]
        return out

    def forget(self, shards: Sequence[int]) -> None:
        """Close remote shards the epoch has finished with (see `SampleReader.forget`)."""
        for s in shards:
            if not storage.is_local(self.urls[s]):
                self._files.pop(s, None)
                for key in [k for k in self._colviews if k[0] == s]:
                    del self._colviews[key]

    def close(self) -> None:
        self._files.clear()
        self._colviews.clear()
