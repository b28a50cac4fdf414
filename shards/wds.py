"""WebDataset tar shards on open file objects: a deterministic writer (with DALI's index) and a reference reader."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import BinaryIO

from shards.errors import SampleKeyError, ShardFormatError
from shards.idx import format_index
from shards.keys import split_member_name, validate_ext, validate_key
from shards.tario import BLOCK, RECORD, TarMember, iter_members, padding, ustar_header

__all__ = ["TarShardWriter", "iter_sample_members", "iter_samples", "read_member"]

Bytes = bytes | bytearray | memoryview
_ZEROS = bytes(BLOCK)


class TarShardWriter:
    """Writes samples as adjacent `<key>.<ext>` members with deterministic headers, indexing as it goes.

    The writer owns no file: it writes to `fileobj` and never closes it (whoever opens a file closes it). Fields of
    a sample are written in sorted order so the same samples always give the same bytes. `idx_bytes()` returns the
    DALI index of what was written, identical to what `wds2idx` computes from the finished tar.

        w = TarShardWriter(f, url="s3://b/train/shard-000000.tar", fields={"jpg", "cls"})
        w.write("n01440764_10026", {"jpg": jpeg_bytes, "cls": b"0"})
        w.close()
    """

    def __init__(self, fileobj: BinaryIO, *, url: str = "<stream>", fields: Collection[str] | None = None):
        self._f = fileobj
        self._url = url
        self._fields = frozenset(fields) if fields is not None else None
        self._keys: set[str] = set()
        self._index: list[list[TarMember]] = []
        self._pos = 0
        self._closed = False

    @property
    def num_samples(self) -> int:
        return len(self._index)

    @property
    def num_bytes(self) -> int:
        return self._pos

    def write(self, key: str, sample: Mapping[str, Bytes]) -> None:
        """Append one sample. Raises SampleKeyError for a bad or repeated key, or a missing declared field."""
        if self._closed:
            raise ValueError(f"{self._url}: write after close")
        validate_key(key, url=self._url)
        if key in self._keys:
            raise SampleKeyError(
                url=self._url, reason=f"duplicate sample key {key!r}; keys must be unique within a split"
            )
        if not sample:
            raise SampleKeyError(url=self._url, reason=f"sample {key!r} has no fields")
        if self._fields is not None:
            missing = self._fields.difference(sample)
            if missing:
                raise SampleKeyError(url=self._url, reason=f"sample {key!r} lacks declared field(s) {sorted(missing)}")
        members = []
        for ext in sorted(sample):
            validate_ext(ext, key=key, url=self._url)
            name = f"{key}.{ext}".encode()
            if len(name) > 100:
                raise SampleKeyError(
                    url=self._url, reason=f"member name {name.decode()!r} exceeds the 100-byte tar name field"
                )
            members.append((name, ext))
        self._keys.add(key)
        entry = []
        parts: list[Bytes] = []
        for name, ext in members:
            data = sample[ext]
            size = len(data) if not isinstance(data, memoryview) else data.nbytes
            pad = padding(size)
            parts += (ustar_header(name, size), data, _ZEROS[:pad])
            entry.append(TarMember(name=name.decode(), offset=self._pos + BLOCK, size=size))
            self._pos += BLOCK + size + pad
        writev = getattr(self._f, "writev", None)
        if writev is not None:  # one system call for the whole sample where the file allows it
            writev(parts)
        else:
            for p in parts:
                self._f.write(p)
        self._index.append(entry)

    def close(self) -> None:
        """Write the end-of-archive marker and pad to a whole tar record, as GNU tar does."""
        if self._closed:
            return
        end = self._pos + 2 * BLOCK
        end += -end % RECORD
        self._f.write(bytes(end - self._pos))
        self._pos = end
        self._closed = True

    def idx_bytes(self) -> bytes:
        return format_index(self._index)

    def __enter__(self) -> TarShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()


def iter_sample_members(f: BinaryIO, *, url: str = "<stream>") -> Iterator[tuple[str, list[TarMember]]]:
    """Group the members of a shard into samples, enforcing the format's rules.

    Members of one sample must be adjacent, each key may appear once in a shard, each field once in a
    sample, and keys and fields must be valid; any violation raises ShardFormatError naming the member.
    """
    seen: set[str] = set()
    key: str | None = None
    group: list[TarMember] = []
    exts: set[str] = set()
    for m in iter_members(f, url=url):
        k, ext = split_member_name(m.name)
        try:
            validate_key(k, url=url)
            validate_ext(ext, key=k, url=url)
        except SampleKeyError as e:
            raise ShardFormatError(str(e).removeprefix(f"{url}: "), url=url, member=m.name) from None
        if k != key:
            if key is not None:
                yield key, group
            if k in seen:
                raise ShardFormatError(
                    f"sample key {k!r} appears twice (duplicate key, or members of a sample not adjacent)",
                    url=url,
                    member=m.name,
                )
            seen.add(k)
            key, group, exts = k, [], set()
        if ext in exts:
            raise ShardFormatError(f"field {ext!r} appears twice in sample {k!r}", url=url, member=m.name)
        exts.add(ext)
        group.append(m)
    if key is not None:
        yield key, group


def read_member(f: BinaryIO, m: TarMember, *, url: str = "<stream>") -> bytes:
    """Read one member's data with a seek; ShardFormatError if the file ends early."""
    f.seek(m.offset)
    data = f.read(m.size)
    if len(data) != m.size:
        raise ShardFormatError(f"member data truncated ({len(data)} of {m.size} bytes)", url=url, member=m.name)
    return data


def iter_samples(
    f: BinaryIO, *, url: str = "<stream>", fields: Collection[str] | None = None
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The reference reader: yield `(key, {ext: bytes})` for every sample of a shard, in tar order.

    Pure Python and deliberately simple, so DALI's output can be compared against it. With `fields`, a
    sample lacking a declared field raises ShardFormatError naming the key.
    """
    required = frozenset(fields or ())
    for key, members in iter_sample_members(f, url=url):
        sample = {}
        for m in members:  # iter_members seeks back to its own position, so reading here is safe
            sample[split_member_name(m.name)[1]] = read_member(f, m, url=url)
        missing = required.difference(sample)
        if missing:
            raise ShardFormatError(
                f"sample {key!r} lacks declared field(s) {sorted(missing)}", url=url, member=members[0].name
            )
        yield key, sample
