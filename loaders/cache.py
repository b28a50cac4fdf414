"""Local copies of remote shards: fetched by several streams at once in plan order, checked against the manifest's
sha256 before use, kept within a size limit without evicting a shard that is about to be read.

One GPU consumes ~1.3 GB/s of ImageNet JPEGs while one S3 stream serves ~50-100 MB/s, so a rank fetches
`streams` shards (or byte ranges of one large shard) at a time. A shard is written to a `.part` file, hashed,
compared with the manifest's sha256 and only then renamed into place: a copy in the cache is always a verified
one. A corrupt download is fetched once more, then raises `ShardFormatError` naming the shard; transient store
errors (a dropped connection, a short read) are retried with backoff, a bounded number of times.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

from shards import storage
from shards.errors import ShardFormatError

__all__ = ["DEFAULT_STREAMS", "ShardCache", "ShardJob"]

DEFAULT_STREAMS = 8  # concurrent GETs per rank: 8 x 50-100 MB/s covers one GPU's ~1.3 GB/s of JPEGs
RANGE_BYTES = 64 << 20  # a shard larger than two of these is fetched as concurrent ranged GETs
RETRIES = 4  # attempts per GET on a transient error (backoff 0.25, 0.5, 1 s)


class ShardJob(NamedTuple):
    """A remote shard to have locally: its URL, size and expected sha256 (from the manifest)."""

    url: str
    size: int
    sha256: str | None


class _Transient(Exception):
    """A fetch failed in a way worth retrying (short read, dropped connection)."""


class ShardCache:
    """Local copies of remote shards, at most `max_bytes` on disk, least recently used evicted first (never a
    pinned one: the shards the current epoch has still to read). Local shards are used in place. The limit
    gives way only where the shards a rank reads at once (`open_shards`, twice that where the read-ahead crosses
    into the next group) do not fit in it.

    Ranks of one node may share the directory: a lock file per shard makes one of them fetch it and the others
    find it there."""

    def __init__(self, cache_dir: str | None, max_bytes: int, *, streams: int = DEFAULT_STREAMS):
        import tempfile

        if streams < 1:
            raise ValueError(f"fetch_streams must be at least 1, not {streams}")
        self._dir = cache_dir or os.path.join(tempfile.gettempdir(), "shardkit-cache")
        if os.path.exists(self._dir) and not os.path.isdir(self._dir):
            raise NotADirectoryError(f"cache_dir {self._dir} is not a directory")
        self._max = max_bytes
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # signalled when pinned bytes shrink
        self._inflight: dict[str, threading.Event] = {}
        self._pinned: dict[str, int] = {}  # local path -> bytes, not to be evicted
        self._released: set[str] = set()  # read this epoch and let go: not to be prefetched again
        self._downloading: dict[str, int] = {}  # local path -> bytes, being fetched by this process
        self._gets = threading.BoundedSemaphore(streams)  # every GET, whole or ranged, holds one
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()  # prefetch work, taken first in, first out
        self._workers: list[threading.Thread] = []  # started at the first prefetch of a remote shard
        self._generation = 0  # bumped by prefetch: older prefetch loops stop
        self.streams = streams
        self.bytes_fetched = 0
        self.fetch_window: tuple[float, float] | None = None  # (first download's start, last one's end)

    def local_name(self, url: str) -> str:
        return os.path.join(self._dir, hashlib.sha256(url.encode()).hexdigest()[:24] + "-" + url.rsplit("/", 1)[-1])

    def path(self, job: ShardJob) -> str:
        """The local path of a shard, fetching (and verifying) it first if needed; blocks until it is there."""
        if storage.is_local(job.url):
            return storage.local_path(job.url)
        local = self.local_name(job.url)
        with self._lock:
            event = self._inflight.get(local)
            mine = event is None and not _complete(local, job.size)
            if mine:
                event = self._inflight[local] = threading.Event()
        if not mine:
            if event is not None:
                event.wait()
            try:
                os.utime(local)  # recently used
            except FileNotFoundError:  # another rank sharing this cache evicted it meanwhile: fetch it again
                return self.path(job)
        else:
            try:
                self._fetch_locked(job, local)
            finally:
                with self._lock:
                    self._inflight.pop(local).set()
        with self._lock:  # in use until released
            self._pinned[local] = job.size
        return local

    def small(self, url: str) -> bytes:
        """A small file that travels with a shard (its `.idx`): fetched once into the cache (counted in
        `bytes_fetched`), then read from disk, so a warm epoch makes no request at all and survives the store
        going away. Its bytes are checked against the verified tar by every reader, so a copy needs no hash."""
        if storage.is_local(url):
            return storage.read_bytes(url)
        local = self.local_name(url)
        try:
            with open(local, "rb") as f:
                data = f.read()
            os.utime(local)
            return data
        except FileNotFoundError:
            pass
        data = self._retrying(ShardJob(url, 0, None), lambda: storage.read_bytes(url))
        with self._lock:
            self.bytes_fetched += len(data)
        os.makedirs(self._dir, exist_ok=True)
        tmp = f"{local}.part-{os.getpid()}-{threading.get_ident()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, local)
        return data

    def _fetch_locked(self, job: ShardJob, local: str) -> None:
        try:
            os.makedirs(self._dir, exist_ok=True)
            with open(f"{local}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if _complete(local, job.size):
                    os.utime(local)
                    return
                with self._lock:
                    self._downloading[local] = job.size
                self._evict(job.size, local)
                for attempt in (1, 2):  # a corrupt download is fetched once more
                    tmp = f"{local}.part-{os.getpid()}-{threading.get_ident()}"
                    try:
                        digest = self._download(job, tmp)
                        if job.sha256 is None or digest == job.sha256:
                            os.replace(tmp, local)
                            return
                    finally:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(tmp)
                    if attempt == 2:
                        raise ShardFormatError(
                            f"downloaded bytes hash to sha256 {digest}, the manifest says {job.sha256} "
                            "(fetched twice; the stored shard is corrupt)",
                            url=job.url,
                        )
        except FileNotFoundError:
            raise ShardFormatError("shard is missing", url=job.url) from None
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise OSError(e.errno, f"cache {self._dir} is full while fetching {job.url}") from None
            if isinstance(e, NotADirectoryError | FileExistsError | PermissionError):
                raise OSError(e.errno, f"cache {self._dir} cannot hold {job.url}: {e.strerror}") from None
            raise
        finally:
            with self._lock:
                self._downloading.pop(local, None)

    def _download(self, job: ShardJob, tmp: str) -> str:
        """Fetch the shard into `tmp` and return its sha256; `fetch_window` spans every download's start and end."""
        start = time.monotonic()
        try:
            return self._download_into(job, tmp)
        finally:
            with self._lock:
                first = self.fetch_window[0] if self.fetch_window else start
                self.fetch_window = (min(first, start), time.monotonic())

    def _download_into(self, job: ShardJob, tmp: str) -> str:
        """Fetch the shard into `tmp` (ranged and concurrent when large) and return its sha256."""
        if job.size <= 2 * RANGE_BYTES:
            return self._retrying(job, lambda: self._get_whole(job, tmp))
        with open(tmp, "wb") as f:
            f.truncate(job.size)
        starts = list(range(0, job.size, RANGE_BYTES))
        fd = os.open(tmp, os.O_WRONLY)
        errors: list[BaseException] = []
        todo = queue.SimpleQueue()
        for s in starts:
            todo.put(s)

        def ranges() -> None:  # up to `streams` threads take the ranges; each GET holds a stream
            while not errors:
                try:
                    start = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    self._retrying(job, self._range_writer(job, fd, start))
                except BaseException as e:
                    errors.append(e)

        threads = [threading.Thread(target=ranges, daemon=True) for _ in range(min(self.streams, len(starts)))]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            os.close(fd)
        if errors:
            raise errors[0]
        h = hashlib.sha256()
        with open(tmp, "rb") as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
        return h.hexdigest()

    def _range_writer(self, job: ShardJob, fd: int, start: int):
        def fetch() -> None:
            length = min(RANGE_BYTES, job.size - start)
            with self._gets:
                data = storage.read_range(job.url, start, length)
            if len(data) != length:
                raise _Transient(f"range {start}+{length} returned {len(data)} bytes")
            os.pwrite(fd, data, start)
            with self._lock:
                self.bytes_fetched += length

        return fetch

    def _get_whole(self, job: ShardJob, tmp: str) -> str:
        h, got = hashlib.sha256(), 0
        with self._gets, storage.open_read(job.url, block_size=8 << 20) as src, open(tmp, "wb") as dst:
            while chunk := src.read(8 << 20):
                h.update(chunk)
                dst.write(chunk)
                got += len(chunk)
                with self._lock:
                    self.bytes_fetched += len(chunk)
        if got != job.size:
            raise _Transient(f"download ended after {got} of {job.size} bytes")
        return h.hexdigest()

    def _retrying(self, job: ShardJob, fetch):
        for attempt in range(RETRIES):
            try:
                return fetch()
            except FileNotFoundError:
                raise
            except Exception as e:  # short reads, dropped connections, the store's own errors (botocore, aiohttp)
                if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EACCES, errno.ENOTDIR):
                    raise  # the cache's disk, not the store: retrying cannot help
                if attempt == RETRIES - 1:
                    raise ShardFormatError(f"fetch failed {RETRIES} times, last: {e!r}", url=job.url) from None
                time.sleep(0.25 * 2**attempt)
        raise AssertionError("unreachable")

    def _evict(self, incoming: int, local: str) -> None:
        """Remove least recently used copies until `incoming` fits, never a pinned one. Ranks of one node may
        share the directory, so a file can vanish between listing and removal: that is not an error."""
        if not os.path.isdir(self._dir):
            return
        files = []
        for name in os.listdir(self._dir):
            if ".part-" in name or name.endswith(".lock"):
                continue
            path = os.path.join(self._dir, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            files.append((st.st_mtime, st.st_size, path))
        files.sort()
        with self._lock:
            pinned = set(self._pinned)
            # other downloads of this process will land too: count them as if they were there
            total = sum(size for _, size, _ in files) + sum(n for p, n in self._downloading.items() if p != local)
        for _, size, path in files:
            if total + incoming <= self._max:
                break
            if path in pinned:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size

    def prefetch(self, jobs: Sequence[ShardJob]) -> None:
        """Fetch remote shards in the background, `streams` at a time, in the given (plan) order, pinning each
        until `release`; it runs ahead only as far as the size limit allows. A new call replaces the last."""
        remote = [j for j in jobs if not storage.is_local(j.url)]
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._pinned = {self.local_name(j.url): j.size for j in remote if self.local_name(j.url) in self._pinned}
            self._released.clear()
            self._room.notify_all()
        if not remote:
            return

        def fetch(job: ShardJob) -> None:
            local = self.local_name(job.url)
            with self._lock:  # run ahead only while the pinned shards and this one fit the limit
                while self._generation == generation and self._pinned and local not in self._pinned:
                    if sum(self._pinned.values()) + job.size <= self._max:
                        break
                    self._room.wait(timeout=1)
                if self._generation != generation or local in self._released:  # read (and let go) meanwhile
                    return
                self._pinned[local] = job.size
            with contextlib.suppress(Exception):  # the reader raises a clear error when it gets there
                self.path(job)

        for job in remote:  # the workers take them first in, first out: plan order
            self._jobs.put((generation, fetch, job))
        while len(self._workers) < self.streams:  # daemon threads: a waiting prefetch never holds up the exit
            t = threading.Thread(target=self._work, name="shard-fetch", daemon=True)
            t.start()
            self._workers.append(t)

    def _work(self) -> None:
        while True:
            generation, fetch, job = self._jobs.get()
            if generation == self._generation:
                fetch(job)

    def release(self, urls: Sequence[str]) -> None:
        """The epoch has read these shards: they may be evicted again."""
        with self._lock:
            for url in urls:
                self._pinned.pop(self.local_name(url), None)
                self._released.add(self.local_name(url))
            self._room.notify_all()


def _complete(path: str, size: int) -> bool:
    try:
        return os.path.getsize(path) == size
    except FileNotFoundError:
        return False
