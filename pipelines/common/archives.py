"""Members of zip archives read in place: where each member's bytes start, so a writer can ranged-read one
member of a 90 GB zip on object storage without extracting anything."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, NamedTuple

from pipelines.common.errors import BadInput

__all__ = [
    "MAX_INFLATED",
    "MAX_RATIO",
    "ArchiveError",
    "check_zip",
    "member_bytes",
    "ZipMember",
    "inflate",
    "open_zip",
    "zip_members",
]


class ArchiveError(ValueError):
    """An archive that cannot be read as one (0 bytes, cut short, not a zip): one line naming the file."""


def open_zip(f: IO[bytes], url: str) -> zipfile.ZipFile:
    """`zipfile.ZipFile(f)`, or ArchiveError naming `url` and what is wrong with it (zipfile's BadZipFile says
    neither which file nor how large it is)."""
    try:
        return zipfile.ZipFile(f)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        try:
            size = f"{f.seek(0, 2)} bytes"
        except (OSError, ValueError):
            size = "unknown size"
        raise ArchiveError(f"{url}: not a readable zip archive ({size}: {e}); download it again") from None


class ZipMember(NamedTuple):
    """Where one member's stored bytes are inside its zip."""

    name: str
    offset: int
    length: int
    deflated: bool
    size: int  # the size the central directory declares, inflated


def check_zip(url: str) -> None:
    """ArchiveError unless `url` opens as a zip (its central directory is read: a few KB at the end), so that a
    broken download is one line at the start of a job, not a listing worker's traceback later."""
    from shards import storage

    with storage.open_read(url, block_size=1 << 16) as f:
        open_zip(f, url).close()


def zip_members(f: IO[bytes], url: str, accept: Callable[[str], bool]) -> Iterator[ZipMember]:
    """Every accepted file member of the zip open as `f` (seekable), with the offset of its data: the local header
    is read for that, since its name and extra lengths can differ from the central directory's."""
    with open_zip(f, url) as z:
        for info in z.infolist():
            if info.is_dir() or not accept(info.filename):
                continue
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise ValueError(f"{url}: {info.filename}: unsupported zip compression {info.compress_type}")
            f.seek(info.header_offset)
            local = f.read(30)
            start = info.header_offset + 30 + int.from_bytes(local[26:28], "little")
            start += int.from_bytes(local[28:30], "little")
            deflated = info.compress_type == zipfile.ZIP_DEFLATED
            yield ZipMember(info.filename, start, info.compress_size, deflated, info.file_size)


MAX_RATIO = 200  # images and audio barely compress (~1x), annotations ~10x; a member past 200x is a bomb
MAX_INFLATED = 1 << 30  # no sample member of any dataset here comes near 1 GiB


def member_bytes(data: bytes, meta: dict) -> bytes:
    """A pointer's bytes as the sample wants them: inflated when its listing marked it deflated (`meta["inflate"]`:
    the member's declared size, or True from a listing that did not record it)."""
    mark = meta.get("inflate", False)
    if mark is False:
        return data
    return inflate(data, None if mark is True else int(mark))


def inflate(data: bytes, declared: int | None = None) -> bytes:
    """A deflated zip member's bytes, inflated - no further than its declared size, MAX_RATIO times its
    compressed size and MAX_INFLATED. A declared size past those is refused before anything is inflated, and a
    member that inflates past what it declared is refused as soon as it does: either way this input's quarantine
    reason (BadInput, stage "read"), never a writer's gigabytes; so is a member that will not inflate."""
    cap = min(MAX_INFLATED, MAX_RATIO * max(len(data), 1))
    if declared is not None:
        if declared > cap:
            raise BadInput(
                f"zip member declares {declared} bytes from {len(data)} ({MAX_RATIO}x and "
                f"{MAX_INFLATED >> 20} MiB at most): refused as a decompression bomb",
                stage="read",
            )
        cap = declared
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(data, cap + 1)
    except zlib.error as e:
        raise BadInput(f"zip member will not inflate: {e}", stage="read") from None
    if len(out) > cap:
        what = f"its declared {declared} bytes" if declared is not None else f"{cap} bytes"
        raise BadInput(
            f"zip member inflates to more than {what} from {len(data)} ({MAX_RATIO}x and "
            f"{MAX_INFLATED >> 20} MiB at most): refused as a decompression bomb",
            stage="read",
        )
    if not d.eof or (declared is not None and len(out) != declared):
        raise BadInput(
            f"zip member will not inflate: its deflate stream ends early (truncated) after {len(out)} bytes",
            stage="read",
        )
    return out
