"""Inputs of `convert` that the workers list and read, so that the launcher's memory does not grow with them.

- A table of rows: a Parquet or Arrow IPC file (`rows.parquet`, `s3://b/rows.arrow`); each row, as a dict of
  column -> value, is one input. The launcher reads the file's footer (row count and row groups) and the first
  rows (the probe); each worker reads its row groups. Input i is row i, so the keys are those of the same rows
  given as a list.
- A glob (`data/*/*.jpg`, `s3://b/x/*/*.png`) is split at its first wildcard folder: the launcher lists that level
  (the class folders, say), the workers list what matches under each, count, and number the inputs in the order
  of the whole glob sorted - the same keys, so the same shards, as the glob listed by the launcher. A glob whose
  first wildcard is in its last part or is `**` has no folder level to split at and is listed by the launcher.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
from collections.abc import Iterator
from typing import Any

from shards import storage

__all__ = ["RowTable", "SplitGlob", "is_row_table", "numbered", "offsets", "split_glob"]

ROW_SUFFIXES = (".parquet", ".arrow", ".feather", ".ipc")
CHUNK = 2048  # inputs per Beam element


def is_row_table(inputs: Any) -> bool:
    """A URL of a Parquet or Arrow IPC file (no wildcard): a table whose rows are the inputs."""
    return isinstance(inputs, str) and inputs.lower().endswith(ROW_SUFFIXES) and not any(c in inputs for c in "*?[")


@dataclasses.dataclass(frozen=True)
class RowTable:
    """A Parquet or Arrow IPC file of rows: `parts` (row groups / record batches) are read by the workers."""

    url: str

    @property
    def parquet(self) -> bool:
        return self.url.lower().endswith(".parquet")

    def _open(self, f: Any) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        return pq.ParquetFile(f) if self.parquet else pa.ipc.open_file(f)

    def parts(self) -> list[tuple[int, int, int]]:
        """(part, first row, rows) of each row group or record batch: the footer only."""
        with storage.open_read(self.url) as f:
            t = self._open(f)
            if self.parquet:
                counts = [t.metadata.row_group(i).num_rows for i in range(t.metadata.num_row_groups)]
            else:
                counts = [t.get_batch(i).num_rows for i in range(t.num_record_batches)]
        out, first = [], 0
        for i, n in enumerate(counts):
            out.append((i, first, n))
            first += n
        return out

    def rows(self, part: int) -> list[dict[str, Any]]:
        """The rows of one part, as dicts."""
        with storage.open_read(self.url) as f:
            t = self._open(f)
            batch = t.read_row_group(part, use_threads=False) if self.parquet else t.get_batch(part)
            return batch.to_pylist()

    def head(self, n: int) -> list[dict[str, Any]]:
        """The first n rows (the launcher's probe), read n at a time: never a whole row group here."""
        out: list[dict[str, Any]] = []
        with storage.open_read(self.url) as f:
            t = self._open(f)
            if self.parquet:
                batches = t.iter_batches(batch_size=n, use_threads=False)
            else:
                batches = (t.get_batch(i).slice(0, n) for i in range(t.num_record_batches))
            for batch in batches:
                out += batch.slice(0, n - len(out)).to_pylist()
                if len(out) >= n:
                    break
        return out


def _parts_of(pattern: str) -> tuple[str, str, str] | None:
    """(the folder before the first wildcard, that wildcard part, the rest) of a glob whose first wildcard part
    is a folder level (not `**`, not the last part); None otherwise."""
    proto, sep, path = pattern.partition("://") if "://" in pattern else ("", "", pattern)
    parts = path.split("/")
    for i, part in enumerate(parts):
        if any(c in part for c in "*?["):
            if part == "**" or "**" in part or i == len(parts) - 1:
                return None
            return proto + sep + "/".join(parts[:i]), part, "/".join(parts[i + 1 :])
    return None


def _glob(pattern: str) -> list[str]:
    """A glob's matches, sorted (local: the stdlib's glob with `**`; remote: the store's)."""
    if storage.is_local(pattern):
        return sorted(globlib.glob(storage.local_path(pattern), recursive=True))
    fs, path = storage.get_fs(pattern)
    proto = storage.protocol_of(pattern)
    return sorted(f"{proto}://{p}" for p in fs.glob(path))


@dataclasses.dataclass(frozen=True)
class SplitGlob:
    """A glob split at its first wildcard folder level: `folders()` in the launcher, `matches(folder)` on
    the workers."""

    pattern: str
    root: str
    level: str
    rest: str

    def folders(self) -> list[str]:
        """The folders the first wildcard level matches, in the order their matches sort in the whole glob."""
        return sorted(_glob(storage.join(self.root, self.level) if self.root else self.level), key=lambda d: d + "/")

    def matches(self, folder: str) -> list[str]:
        return _glob(f"{folder}/{self.rest}")

    def head(self, n: int) -> list[str]:
        out: list[str] = []
        for folder in self.folders():
            out += self.matches(folder)[: n - len(out)]
            if len(out) >= n:
                break
        return out


def split_glob(pattern: str) -> SplitGlob | None:
    """The glob split at its first wildcard folder, or None when it has no such level."""
    found = _parts_of(pattern)
    return SplitGlob(pattern, *found) if found else None


def numbered(items: list[Any], first: int) -> Iterator[list[tuple[int, Any]]]:
    """(input number, input) in chunks of CHUNK."""
    for a in range(0, len(items), CHUNK):
        yield [(first + a + j, x) for j, x in enumerate(items[a : a + CHUNK])]


def offsets(counts: list[tuple[str, int]]) -> dict[str, int]:
    """Each folder's first input number, from (folder, matches) pairs: folders in the order of `folders()`."""
    out, at = {}, 0
    for folder, n in sorted(counts, key=lambda c: c[0] + "/"):
        out[folder] = at
        at += n
    return out
