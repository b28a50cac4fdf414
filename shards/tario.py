"""Byte-level ustar headers: deterministic headers for writing, and a defensive parser for reading."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from shards.errors import ShardFormatError

__all__ = ["BLOCK", "RECORD", "TarMember", "ustar_header", "iter_members", "check_indexed_member", "padding"]

BLOCK = 512
RECORD = 20 * BLOCK  # what GNU tar and Python's tarfile pad archives to
MAX_MEMBER_SIZE = 8**11 - 1  # largest size an 11-digit octal field holds (8 GiB - 1)
_ZERO_BLOCK = bytes(BLOCK)
_REGULAR = (b"0", b"\0")
_SKIPPED = (b"5", b"g")  # directories, global pax headers: carry no sample data
_LINKS = {b"1": "hard link", b"2": "symbolic link"}


class TarMember(NamedTuple):
    """One regular file inside a tar: where its data starts and how long it is."""

    name: str
    offset: int  # byte offset of the data (header offset + 512), as DALI's index records it
    size: int


def padding(size: int) -> int:
    """Bytes of zero padding that follow `size` bytes of member data."""
    return -size % BLOCK


_TEMPLATE = b"".join(
    (
        bytes(100),  # name
        b"0000444\0",  # mode
        b"0000000\0",  # uid
        b"0000000\0",  # gid
        bytes(12),  # size
        b"00000000000\0",  # mtime
        b"        ",  # checksum, counted as spaces
        b"0",  # regular file
        bytes(100),  # linkname
        b"ustar\x0000",
        bytes(32),  # uname
        bytes(32),  # gname
        bytes(8),  # devmajor: left empty for regular files, as tarfile does
        bytes(8),  # devminor
        bytes(155),  # prefix
        bytes(12),
    )
)
_TEMPLATE_SUM = sum(_TEMPLATE)
_AFTER_SIZE = _TEMPLATE[136:148]
_AFTER_CHKSUM = _TEMPLATE[156:]


def ustar_header(name: bytes, size: int) -> bytes:
    """A deterministic ustar header: mode 0444, uid/gid 0, mtime 0, no user or group names.

    Field for field what Python's tarfile writes in USTAR format for the same TarInfo, so any tar reader
    accepts it and the same input always gives the same bytes. Built from a template on the hot path.
    """
    if len(name) > 100:
        raise ValueError(f"member name {name!r} is longer than the 100 bytes a ustar name holds")
    if not 0 <= size <= MAX_MEMBER_SIZE:
        raise ValueError(f"member {name!r} has size {size}, beyond the 8 GiB a ustar header holds")
    size_field = b"%011o\0" % size
    checksum = _TEMPLATE_SUM + sum(name) + sum(size_field)
    return b"".join(
        (
            name,
            _TEMPLATE[len(name) : 124],
            size_field,
            _AFTER_SIZE,
            b"%06o\0 " % checksum,
            _AFTER_CHKSUM,
        )
    )


def _field_str(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def _octal(raw: bytes, what: str, url: str, name: str) -> int:
    if raw[:1] and raw[0] & 0x80:  # GNU base-256 encoding
        value = int.from_bytes(raw[1:], "big")
        return -value if raw[0] & 0x40 else value
    text = _field_str(raw).strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise ShardFormatError(f"header field {what} is not a number: {raw!r}", url=url, member=name) from None


def _check_name(name: str, url: str) -> None:
    parts = name.split("/")
    if name.startswith("/") or ".." in parts:
        raise ShardFormatError("member name is absolute or climbs out with '..'", url=url, member=name)


def _parse_pax(data: bytes, url: str) -> dict[str, str]:
    out: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise ShardFormatError("malformed pax extended header", url=url) from None
        if space < 0 or length <= 0:
            raise ShardFormatError("malformed pax extended header", url=url)
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def iter_members(
    f: BinaryIO, *, url: str = "<stream>", end: int | None = None, max_size: int = MAX_MEMBER_SIZE
) -> Iterator[TarMember]:
    """Yield the regular-file members of the tar that starts at `f`'s position, skipping data with seeks.

    Offsets are absolute positions in `f`, so a tar nested inside another (ImageNet's tar of tars) is walked
    in place with `f` positioned at the inner tar and `end` at its last byte. Survives hostile input:
    absolute or '..' names, links, devices, absurd or negative sizes, bad header checksums, truncation and
    a missing end-of-archive marker all raise ShardFormatError naming `url` and the member.
    """
    pos = f.tell()
    if end is None:
        end = f.seek(0, 2)
        f.seek(pos)
    pending: dict[str, str] = {}
    while True:
        header = f.read(BLOCK) if pos < end else b""
        if header == _ZERO_BLOCK:
            return
        if len(header) < BLOCK:
            raise ShardFormatError(f"tar ends at byte {pos} without its end-of-archive marker (truncated)", url=url)
        stored = _octal(header[148:156], "chksum", url, "?")
        computed = sum(header[:148]) + 256 + sum(header[156:])
        signed = sum((b ^ 0x80) - 0x80 for b in header[:148] + header[156:]) + 256
        raw_name = _field_str(header[:100])
        if header[257:262] == b"ustar" and header[345]:
            raw_name = _field_str(header[345:500]) + b"/" + raw_name
        name = pending.pop("path", None) or raw_name.decode("utf-8", "surrogateescape")
        if stored not in (computed, signed):
            raise ShardFormatError(
                f"tar header checksum mismatch at byte {pos} (corrupt or not a tar)", url=url, member=name
            )
        size = _octal(header[124:136], "size", url, name)
        size = int(pending.pop("size", size))
        kind = header[156:157]
        data_at = pos + BLOCK
        if size < 0 or size > max_size:
            raise ShardFormatError(f"absurd member size {size}", url=url, member=name)
        if data_at + size > end:
            raise ShardFormatError(
                f"member claims {size} bytes at offset {data_at} but the tar ends at byte {end} (truncated)",
                url=url,
                member=name,
            )
        if kind in _LINKS:
            raise ShardFormatError(f"{_LINKS[kind]} members are not allowed in shards", url=url, member=name)
        next_pos = data_at + size + padding(size)
        if kind in (b"x", b"L"):
            data = f.read(size)
            if kind == b"x":
                pending.update(_parse_pax(data, url))
            else:
                pending["path"] = _field_str(data).decode("utf-8", "surrogateescape")
        elif kind in _REGULAR:
            _check_name(name, url)
            yield TarMember(name=name, offset=data_at, size=size)
        elif kind not in _SKIPPED:
            raise ShardFormatError(f"unsupported tar member type {kind!r}", url=url, member=name)
        pos = next_pos
        f.seek(pos)


def check_indexed_member(header: bytes, member: TarMember, *, url: str = "<stream>") -> None:
    """Refuse an index entry that the tar does not bear out, by the rules `iter_members` reads a tar with: the
    512 bytes before the member's data must be an intact header (checksum) of a regular file with that very name
    and size, and the name must stay inside the split. For readers that go straight to an `.idx` span."""
    name = member.name
    _check_name(name, url)
    if len(header) != BLOCK:
        raise ShardFormatError("index points before the tar's first header", url=url, member=name)
    stored = _octal(header[148:156], "chksum", url, name)
    computed = sum(header[:148]) + 256 + sum(header[156:])
    if stored != computed and stored != sum((b ^ 0x80) - 0x80 for b in header[:148] + header[156:]) + 256:
        raise ShardFormatError("tar header checksum mismatch (corrupt, or the index is wrong)", url=url, member=name)
    kind = header[156:157]
    if kind not in _REGULAR:
        what = _LINKS.get(kind, f"type {kind!r}")
        raise ShardFormatError(f"index points at a {what} member, not a regular file", url=url, member=name)
    raw_name = _field_str(header[:100])
    if header[257:262] == b"ustar" and header[345]:
        raw_name = _field_str(header[345:500]) + b"/" + raw_name
    if raw_name.decode("utf-8", "surrogateescape") != name:
        raise ShardFormatError(f"the tar header there names {raw_name!r}", url=url, member=name)
    size = _octal(header[124:136], "size", url, name)
    if size != member.size:
        raise ShardFormatError(f"index says {member.size} bytes, the tar header {size}", url=url, member=name)
