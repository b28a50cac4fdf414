"""Local shards checked against the manifest's sha256 once per process, in the background, ahead of reading.

A flipped byte inside a JPEG still decodes (libjpeg only warns), so without a check a damaged shard would reach
the model as a wrong image. The loader schedules the shards of each epoch in plan order; two threads hash them
(hashlib releases the GIL on large buffers; ~1.5-2 GB/s per thread); before a batch is handed out, `wait` makes
sure every shard it came from has passed, and raises `ShardFormatError` naming the shard if one has not. Shards
copied from a remote store into the cache were hashed while they were fetched (`loaders.cache`), so they are not
hashed again. The result is kept per process for the file's (path, size, mtime), so a second loader over the
same split (eval beside train) does not hash it again. `verify=False` turns the check off.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from loaders.cache import ShardJob
from shards import storage
from shards.errors import ShardFormatError

__all__ = ["Verifier"]

_lock = threading.Lock()
_results: dict[tuple[str, int, int, str], Future] = {}  # (path, size, mtime_ns, sha256) -> None or the error
_pool = ThreadPoolExecutor(2, thread_name_prefix="shard-verify")


def _hash(path: str, url: str, expected: str) -> None:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    if h.hexdigest() != expected:
        raise ShardFormatError(f"bytes hash to sha256 {h.hexdigest()}, the manifest says {expected}", url=url)


class Verifier:
    """Hashes the local shards a loader reads (see the module docstring)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def _future(self, job: ShardJob) -> Future | None:
        if not self.enabled or job.sha256 is None or not storage.is_local(job.url):
            return None
        path = storage.local_path(job.url)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None  # the reader says the shard is missing
        key = (path, st.st_size, st.st_mtime_ns, job.sha256)
        with _lock:
            fut = _results.get(key)
            if fut is None:
                fut = _results[key] = _pool.submit(_hash, path, job.url, job.sha256)
        return fut

    def schedule(self, jobs: Sequence[ShardJob]) -> None:
        """Start checking these shards, in this order, unless they were checked in this process already."""
        for job in jobs:
            self._future(job)

    def wait(self, job: ShardJob) -> None:
        """Return once the shard has passed; raise `ShardFormatError` naming it if it has not."""
        fut = self._future(job)
        if fut is not None:
            fut.result()
