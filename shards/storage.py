"""The one module that turns URLs into file objects: local paths, file://, memory://, s3://, gs:// (gcsfs).

Writes are atomic everywhere: local and memory files are written under a temporary name and renamed;
object-store files are single uploads (a PUT, or a multipart upload completed on close) that are aborted
on error, so no reader ever sees half a file.

Credentials and endpoints come from the environment (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, the usual
AWS_* keys, GOOGLE_APPLICATION_CREDENTIALS), from SHARDS_STORAGE_OPTIONS (JSON keyed by protocol, e.g.
'{"s3": {"anon": false}}'), or from `configure()`. They are never logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

from shards.storeerrors import StoreError, store_errors, translated

__all__ = [
    "StoreError",
    "overlap",
    "configure",
    "configured",
    "protocol_of",
    "is_local",
    "join",
    "get_fs",
    "open_read",
    "read_bytes",
    "read_range",
    "atomic_write",
    "stale_temporaries",
    "TEMPORARY_NAME",
    "write_bytes",
    "exists",
    "size",
    "listdir",
    "list_files",
    "walk",
    "stat_files",
    "remove",
    "remove_tree",
    "create_exclusive",
    "local_path",
]

_OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
_INSTALL_HINT = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
_configured: dict[str, dict[str, Any]] = {}


def configure(protocol: str, **options: Any) -> None:
    """Set fsspec options for one protocol (e.g. `configure("s3", client_kwargs={...})`) for this process."""
    _configured[protocol] = dict(options)


def configured() -> dict[str, dict[str, Any]]:
    """What `configure()` set in this process, to hand to worker processes."""
    return {k: dict(v) for k, v in _configured.items()}


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def is_local(url: str) -> bool:
    return protocol_of(url) == "file"


def local_path(url: str) -> str:
    """The filesystem path of a local URL (plain path or file://)."""
    if not is_local(url):
        raise ValueError(f"{url} is not a local path")
    return url[len("file://") :] if url.startswith("file://") else url


def join(url: str, *parts: str) -> str:
    """Join path components onto a URL with '/', whatever the store."""
    if is_local(url) and not url.startswith("file://"):
        return os.path.join(url, *parts)
    return posixpath.join(url, *parts)


def _options(protocol: str) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if protocol in _OBJECT_STORES:
        # no listing cache: shards and manifests appear while a process runs (a job's writers, a re-run), and a
        # stale listing would make a committed manifest look missing
        opts["use_listings_cache"] = False
    if protocol in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            opts["client_kwargs"] = {"endpoint_url": endpoint}
    env = os.environ.get("SHARDS_STORAGE_OPTIONS")
    if env:
        try:
            opts.update(json.loads(env).get(protocol, {}))
        except (ValueError, AttributeError):
            raise ValueError(
                'SHARDS_STORAGE_OPTIONS must be a JSON object keyed by protocol, e.g. \'{"s3": {"anon": true}}\''
            ) from None
    opts.update(_configured.get(protocol, {}))
    return opts


def get_fs(url: str):
    """(fsspec filesystem, path inside it) for a URL, with this module's options applied."""
    import fsspec

    protocol = protocol_of(url)
    try:
        fs, path = fsspec.core.url_to_fs(url, **_options(protocol))
    except ImportError as e:
        hint = _INSTALL_HINT.get(protocol)
        raise ImportError(f"{url}: reading {protocol}:// needs `pip install {hint}`" if hint else str(e)) from e
    return fs, path


@translated
def open_read(url: str, *, block_size: int | None = None) -> BinaryIO:
    """A seekable binary file for reading; `block_size` sets the read-ahead of remote files."""
    if is_local(url):
        return open(local_path(url), "rb")
    fs, path = get_fs(url)
    kwargs = {"block_size": block_size} if block_size else {}
    return fs.open(path, "rb", **kwargs)


@translated
def read_bytes(url: str) -> bytes:
    with open_read(url) as f:
        return f.read()


@translated
def read_range(url: str, offset: int, length: int) -> bytes:
    """`length` bytes at `offset`: one ranged GET on object stores, a seek and read locally."""
    if is_local(url):
        with open(local_path(url), "rb") as f:
            f.seek(offset)
            return f.read(length)
    fs, path = get_fs(url)
    return fs.cat_file(path, start=offset, end=offset + length)


def _writer_tag() -> str:
    """`<host>-<pid>` of the writing process, in temporary names: whoever finds one later can tell whether its
    writer is still alive (`stale_temporaries`)."""
    import re
    import socket

    return f"{re.sub(r'[^A-Za-z0-9]', '', socket.gethostname())[:32] or 'host'}-{os.getpid()}"


TEMPORARY_NAME = r"^\.(?P<name>.+)\.tmp-(?:(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-)?[0-9a-f]{12}$"


def stale_temporaries(folder_url: str, *, max_age: float = 3600.0) -> list[str]:
    """Names of the temporaries `atomic_write` left in a local folder that nobody will finish: their writer ran
    on this host and is gone, or they are older than `max_age` seconds (a writer on another host, or a name of
    an older version). A live writer's temporary is never listed, so a concurrent run is not disturbed."""
    import re
    import time

    from shards.procs import alive

    if not is_local(folder_url):
        return []  # object stores: atomic_write uploads in parts, and an aborted upload leaves no object
    folder = local_path(folder_url)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    here = _writer_tag().rsplit("-", 1)[0]
    stale = []
    for e in entries:
        m = re.match(TEMPORARY_NAME, e.name)
        if not m or not e.is_file(follow_symlinks=False):
            continue
        if (m["host"] == here and not alive(int(m["pid"]))) or time.time() - e.stat().st_mtime > max_age:
            stale.append(e.name)
    return sorted(stale)


@contextlib.contextmanager
def atomic_write(url: str, *, block_size: int | None = None) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes visible at `url` only if the block exits without an exception.

    On object stores `block_size` is the multipart part size (the store's default when None).
    """
    if is_local(url):
        path = local_path(url)
        folder, name = os.path.split(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.tmp-{_writer_tag()}-{uuid.uuid4().hex[:12]}")
        try:
            with open(tmp, "wb", buffering=0) as f:  # unbuffered: writers hand over large pieces
                yield f
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return
    with store_errors(url):
        yield from _remote_write(url, block_size)


def _remote_write(url: str, block_size: int | None) -> Iterator[BinaryIO]:
    fs, path = get_fs(url)
    if protocol_of(url) in _OBJECT_STORES:
        f = fs.open(path, "wb", **({"block_size": block_size} if block_size else {}))
        try:
            yield f
        except BaseException:
            discard = getattr(f, "discard", None)
            if discard is not None:
                discard()  # aborts a started multipart upload; nothing becomes visible
            f.closed = True
            raise
        f.close()
        return
    parent, name = posixpath.split(path)
    tmp = posixpath.join(parent, f".{name}.tmp-{_writer_tag()}-{uuid.uuid4().hex[:12]}")
    try:
        with fs.open(tmp, "wb") as f:
            yield f
        fs.mv(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(tmp)
        raise


@translated
def write_bytes(url: str, data: bytes) -> None:
    with atomic_write(url) as f:
        f.write(data)


@translated
def exists(url: str) -> bool:
    if is_local(url):
        return os.path.exists(local_path(url))
    fs, path = get_fs(url)
    return fs.exists(path)


@translated
def size(url: str) -> int:
    if is_local(url):
        return os.path.getsize(local_path(url))
    fs, path = get_fs(url)
    return int(fs.size(path))


@translated
def listdir(url: str) -> list[str]:
    """Names (not paths) of the files directly under a folder URL, sorted; [] if it does not exist."""
    if is_local(url):
        path = local_path(url)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    fs, path = get_fs(url)
    try:
        entries = (
            fs.ls(path, detail=False, refresh=True) if protocol_of(url) in _OBJECT_STORES else fs.ls(path, detail=False)
        )
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in entries)


@translated
def remove(url: str) -> None:
    if is_local(url):
        os.unlink(local_path(url))
        return
    fs, path = get_fs(url)
    fs.rm(path)


@translated
def remove_tree(url: str) -> None:
    """Remove a folder and everything under it; nothing if it is not there."""
    if is_local(url):
        import shutil

        shutil.rmtree(local_path(url), ignore_errors=True)
        return
    fs, path = get_fs(url)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


def _place(url: str) -> tuple[str, str]:
    """(store, absolute path ending in /) of a URL, to compare where two URLs point."""
    if is_local(url):
        return "file", os.path.realpath(local_path(url)).rstrip("/") + "/"
    protocol, _, rest = url.partition("://")
    return protocol, "/" + rest.strip("/") + "/"


def overlap(source: str, target: str) -> str | None:
    """How `target` overlaps `source` ("is", "is inside", "holds"), or None: an output written into its own
    input would be read back as input (and a re-run would convert its own shards)."""
    (p_in, a), (p_out, b) = _place(source), _place(target)
    if p_in != p_out or not (a.startswith(b) or b.startswith(a)):
        return None
    return "is" if a == b else ("is inside" if b.startswith(a) else "holds")


@translated
def create_exclusive(url: str, data: bytes) -> bool:
    """Write a small file only if nothing is at `url` yet: False when something is. Local files use O_EXCL;
    object stores a conditional PUT (`If-None-Match: *`, S3 since 2024), so two writers never both win."""
    if is_local(url):
        path = local_path(url)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    fs, path = get_fs(url)
    try:
        with fs.open(path, "xb") as f:
            f.write(data)
    except FileExistsError:
        return False
    return True


@translated
def stat_files(url: str) -> dict[str, tuple[int, str]]:
    """{url: (size, version tag)} of every file under a folder URL, recursively: the tag is the object's ETag on
    object stores and the modification time in ns locally, so that a file rewritten in place gets a new tag."""
    if is_local(url):
        out = {}
        for d, _, names in os.walk(local_path(url)):
            for n in names:
                path = os.path.join(d, n)
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(path)
                    out[path if not url.startswith("file://") else "file://" + path] = (st.st_size, str(st.st_mtime_ns))
        return out
    fs, path = get_fs(url)
    proto = protocol_of(url)
    found = fs.find(path, detail=True)
    return {
        f"{proto}://{p}": (int(info["size"]), str(info.get("ETag") or info.get("etag") or info.get("mtime") or ""))
        for p, info in found.items()
        if info.get("type", "file") == "file"
    }


@translated
def walk(url: str) -> list[str]:
    """URLs of every file under a folder URL, recursively, sorted."""
    if is_local(url):
        path = local_path(url)
        return sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs)
    fs, path = get_fs(url)
    proto = protocol_of(url)
    return sorted(f"{proto}://{p}" for p in fs.find(path))


@translated
def list_files(url: str) -> list[tuple[str, int | None]]:
    """(name, size) of every entry directly under a folder URL, sorted; size None for sub-folders."""
    if is_local(url):
        path = local_path(url)
        with os.scandir(path) as it:
            return sorted((e.name, e.stat().st_size if e.is_file() else None) for e in it)
    fs, path = get_fs(url)
    out = []
    for e in fs.ls(path, detail=True):
        name = posixpath.basename(e["name"].rstrip("/"))
        out.append((name, int(e["size"]) if e.get("type") == "file" else None))
    return sorted(out)
