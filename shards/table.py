"""The shard table: a split's shard list as one Parquet file beside manifest.json, for splits of many shards.

At 200,000 shards the `shards` list of manifest.json is ~50 MB of JSON, and every rank parsing it into Python
dicts costs seconds and hundreds of MB before the first batch. From `TABLE_MIN_SHARDS` shards on, the manifest's
writers put the list in `shards-<sha256 prefix>.parquet` (named by its content: a table is never rewritten under a
reader, and a re-run writes the same bytes to the same name) and manifest.json names it in `shard_table`
(`{path, sha256, num_shards}`). manifest.json is still the commit point - written after the table - and smaller
splits keep their list in it, as before. A reader checks the table's sha256 against the manifest, then serves
`manifest["shards"]` as a `ShardTable`: the same entries, made one at a time on access, with each column as an
array for code that needs a whole column (the loaders: sample counts, sizes, paths by index).
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from shards import storage

__all__ = ["TABLE_MIN_SHARDS", "ShardTable", "read_table", "table_bytes", "write_table"]

TABLE_MIN_SHARDS = 10_000
_INTS = ("num_samples", "num_bytes", "generation")
_recent: dict[tuple[str, str], ShardTable] = {}  # (url, sha256) -> table, the last few read
_lock = threading.Lock()


class ShardTable(Sequence):
    """A split's shard entries over Arrow columns: `table[i]` is entry i as the JSON list would hold it (keys with
    no value left out), `column(name)` a whole column (integers as a NumPy array)."""

    def __init__(self, table: Any):
        self._table = table
        self._columns: dict[str, Any] = {}

    def __len__(self) -> int:
        return self._table.num_rows

    def column(self, name: str) -> Any:
        """A whole column: NumPy int64 for the counts (`num_samples`, `num_bytes`, `generation`; -1 where an entry
        has none), else the Arrow array. KeyError if no entry has the key."""
        if name not in self._columns:
            if name not in self._table.column_names:
                raise KeyError(name)
            col = self._table.column(name).combine_chunks()
            if name in _INTS:
                col = col.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            self._columns[name] = col
        return self._columns[name]

    def has(self, name: str) -> bool:
        return name in self._table.column_names

    def value(self, name: str, i: int) -> Any:
        """Entry i's value of `name` (None where it has none)."""
        col = self.column(name)
        if name in _INTS:
            return int(col[i]) if col[i] >= 0 else None
        return col[i].as_py()

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return {k: v for k in self._table.column_names if (v := self.value(k, i)) is not None}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self._table.to_batches():
            for row in batch.to_pylist():
                yield {k: v for k, v in row.items() if v is not None}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


def table_bytes(entries: Sequence[Mapping[str, Any]]) -> bytes:
    """The Parquet bytes of a shard list: the same entries always give the same bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = sorted({k for e in entries for k in e})  # not in the order a writer happened to put the keys
    types = {k: pa.int64() if k in _INTS else pa.string() for k in names}
    columns = {k: pa.array([e.get(k) for e in entries], type=types[k]) for k in names}
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out, compression="zstd", write_statistics=False, store_schema=False)
    return out.getvalue()


def write_table(split_url: str, entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Write the table of `entries` beside the split's manifest; returns the manifest's `shard_table` entry."""
    data = table_bytes(entries)
    digest = hashlib.sha256(data).hexdigest()
    path = f"shards-{digest[:16]}.parquet"
    url = storage.join(split_url, path)
    if not storage.exists(url):  # named by its content: one that is there holds these bytes
        storage.write_bytes(url, data)
    return {"path": path, "sha256": digest, "num_shards": len(entries)}


def read_table(split_url: str, ref: Mapping[str, Any], where: str) -> ShardTable:
    """The table a manifest's `shard_table` names, its bytes checked against the manifest's sha256; ValueError
    naming `where` (the manifest) and the table when it is missing, damaged or another table."""
    import pyarrow.parquet as pq

    digest = ref.get("sha256")
    url = storage.join(split_url, ref["path"])
    with _lock:
        table = _recent.get((url, digest))  # its bytes were checked against this sha256 when it was read
    if table is None:
        try:
            data = storage.read_bytes(url)
        except FileNotFoundError:
            raise ValueError(f"{where}: its shard table {url} is missing") from None
        got = hashlib.sha256(data).hexdigest()
        if got != digest:
            raise ValueError(f"{where}: shard table {url} has sha256 {got}, the manifest says {digest}")
        try:
            table = ShardTable(pq.read_table(io.BytesIO(data), use_threads=False))  # no Arrow pool in a job
        except Exception as e:  # pyarrow's errors: the bytes match the manifest but are no Parquet table
            raise ValueError(f"{where}: shard table {url} does not read as Parquet ({e})") from None
        with _lock:  # a few: a loader reads its sources' manifests, then each again (the generation it pins)
            _recent[(url, digest)] = table
            while len(_recent) > 4:
                del _recent[next(iter(_recent))]
    if len(table) != ref.get("num_shards"):
        raise ValueError(
            f"{where}: shard table {url} has {len(table)} shards, the manifest says {ref.get('num_shards')}"
        )
    return table
