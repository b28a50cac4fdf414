"""Publishing shards into a split folder: names, hashing while writing, and the manifest entry for each."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Iterable, Mapping
from typing import Any, BinaryIO

from shards import storage
from shards.wds import TarShardWriter

__all__ = ["shard_name", "HashingWriter", "write_tar_shard", "write_arrow_shard", "sha256_of"]

Sample = tuple[str, Mapping[str, bytes]]


def shard_name(index: int, ext: str) -> str:
    """'shard-000042.tar': zero-padded so names sort in shard order."""
    return f"shard-{index:06d}.{ext}"


class HashingWriter:
    """A write-only file wrapper that sha256-hashes and counts what passes through it.

    Hashing is synchronous so callers may reuse their buffers once `write` returns; parallelism comes from
    writing several shards at once (hashlib releases the GIL on large buffers).
    """

    def __init__(self, f: BinaryIO):
        self._f = f
        self._h = hashlib.sha256()
        self.num_bytes = 0
        self._fd: int | None = None
        if getattr(f, "raw", f) is f and hasattr(f, "fileno"):  # an unbuffered OS file: writev straight to it
            try:
                self._fd = f.fileno()
            except (OSError, ValueError):
                self._fd = None

    def write(self, data) -> int:
        self._h.update(data)
        self._f.write(data)
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        self.num_bytes += n
        return n

    def writev(self, parts: list) -> int:
        """Write several buffers with one system call where the file has a descriptor (no copy)."""
        update = self._h.update
        total = 0
        for p in parts:
            update(p)
            total += len(p) if not isinstance(p, memoryview) else p.nbytes
        fd = self._fd
        if fd is None:
            for p in parts:
                self._f.write(p)
        else:
            done = os.writev(fd, parts)
            if done < total:  # finish a short write
                rest = b"".join(bytes(p) for p in parts)[done:]
                while rest:
                    rest = rest[os.write(fd, rest) :]
        self.num_bytes += total
        return total

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    # enough of a file for pyarrow's IPC writer
    closed = False

    def tell(self) -> int:
        return self.num_bytes

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True


def write_tar_shard(
    split_url: str, index: int, samples: Iterable[Sample], *, fields: Collection[str] | None = None
) -> dict[str, Any]:
    """Write samples to `<split>/shard-NNNNNN.tar` and its `.idx`, both atomically; return the manifest entry.

    The tar is hashed in the same pass that writes it, so a shard is read exactly once.
    """
    name, idx_name = shard_name(index, "tar"), shard_name(index, "idx")
    url = storage.join(split_url, name)
    with storage.atomic_write(url) as raw:
        out = HashingWriter(raw)
        writer = TarShardWriter(out, url=url, fields=fields)
        for key, sample in samples:
            writer.write(key, sample)
        writer.close()
        digest = out.hexdigest()
    storage.write_bytes(storage.join(split_url, idx_name), writer.idx_bytes())
    return {
        "path": name,
        "idx": idx_name,
        "num_samples": writer.num_samples,
        "num_bytes": out.num_bytes,
        "sha256": digest,
    }


def write_arrow_shard(
    split_url: str, index: int, rows: Iterable[Mapping[str, Any]], *, schema, batch_bytes: int = 4 << 20
) -> dict[str, Any]:
    """Write rows to `<split>/shard-NNNNNN.arrow` (Arrow IPC, record batches of about `batch_bytes`: large enough
    for readers to gather many rows per batch, small enough to reach one row without the rest), atomically and
    hashed in the same pass; return the manifest entry."""
    from shards.arrow import ArrowShardWriter

    name = shard_name(index, "arrow")
    url = storage.join(split_url, name)
    with storage.atomic_write(url) as raw:
        out = HashingWriter(raw)
        with ArrowShardWriter(out, schema, url=url) as writer:
            batch: list[Mapping[str, Any]] = []
            size = 0
            for row in rows:
                batch.append(row)
                size += sum(getattr(v, "nbytes", None) or len(v) if hasattr(v, "__len__") else 8 for v in row.values())
                if size >= batch_bytes:
                    writer.write_rows(batch)
                    batch, size = [], 0
            if batch:
                writer.write_rows(batch)
        digest = out.hexdigest()
    return {"path": name, "num_samples": writer.num_rows, "num_bytes": out.num_bytes, "sha256": digest}


def sha256_of(url: str, *, chunk: int = 8 << 20) -> tuple[str, int]:
    """(sha256 hex, size) of a stored file, streamed in chunks."""
    h = hashlib.sha256()
    n = 0
    with storage.open_read(url, block_size=chunk) as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
            n += len(b)
    return h.hexdigest(), n
