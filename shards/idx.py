"""DALI's webdataset index (`.idx`, version v1.2): written beside each tar so loaders never scan tars."""

from __future__ import annotations

from collections.abc import Sequence

from shards.errors import ShardFormatError
from shards.tario import TarMember

__all__ = ["IDX_VERSION", "format_index", "parse_index", "sample_members"]

IDX_VERSION = "v1.2"


def format_index(samples: Sequence[Sequence[TarMember]]) -> bytes:
    """The index text exactly as DALI's `wds2idx` writes it for the same tar.

    First line `v1.2 <num_samples>`, then one line per sample: `<ext> <data offset> <size> <member name>`
    for each of its members, in tar order, separated by spaces.
    """
    from shards.keys import split_member_name

    lines = [f"{IDX_VERSION} {len(samples)}"]
    for members in samples:
        lines.append(" ".join(f"{split_member_name(m.name)[1]} {m.offset} {m.size} {m.name}" for m in members))
    return ("\n".join(lines) + "\n").encode()


def parse_index(data: bytes, *, url: str = "<stream>") -> list[list[TarMember]]:
    """Parse an index into per-sample member lists; raise ShardFormatError naming `url` and the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ShardFormatError("index is not UTF-8 text", url=url) from None
    lines = text.splitlines()
    if not lines:
        raise ShardFormatError("index is empty", url=url)
    head = lines[0].split()
    if len(head) != 2 or head[0] != IDX_VERSION or not head[1].isdigit():
        raise ShardFormatError(f"index header {lines[0]!r} is not '{IDX_VERSION} <num_samples>'", url=url)
    expected = int(head[1])
    samples: list[list[TarMember]] = []
    for lineno, line in enumerate(lines[1:], start=2):
        parts = line.split()
        if not parts or len(parts) % 4:
            raise ShardFormatError(f"index line {lineno} does not hold 4 fields per member: {line!r}", url=url)
        try:
            members = [
                TarMember(name=parts[i + 3], offset=int(parts[i + 1]), size=int(parts[i + 2]))
                for i in range(0, len(parts), 4)
            ]
        except ValueError:
            raise ShardFormatError(f"index line {lineno} has a non-numeric offset or size", url=url) from None
        samples.append(members)
    if len(samples) != expected:
        raise ShardFormatError(f"index header says {expected} samples but lists {len(samples)}", url=url)
    return samples


def sample_members(
    members: Sequence[TarMember], size: int, *, url: str = "<stream>"
) -> tuple[str, dict[str, TarMember]]:
    """(key, {ext: member}) of one index line, checked as the reference reader would check the tar: a valid key,
    one key per sample, each field once, every span inside the `size`-byte tar after a header's room. Readers
    that trust an index call this (and `tario.check_indexed_member` on each header) before reading a span."""
    from shards.errors import SampleKeyError
    from shards.keys import split_member_name, validate_key

    key = split_member_name(members[0].name)[0] if members else ""
    fields: dict[str, TarMember] = {}
    for m in members:
        k, ext = split_member_name(m.name)
        try:
            validate_key(k, url=url)
        except SampleKeyError as e:
            raise ShardFormatError(f"index names an invalid key: {e}", url=url, member=m.name) from None
        if k != key or not ext or ext in fields:
            raise ShardFormatError("index mixes members of different samples", url=url, member=m.name)
        if m.offset < 512 or m.size < 0 or m.offset + m.size > size:
            raise ShardFormatError(
                f"index span {m.offset}+{m.size} is not inside the {size}-byte tar", url=url, member=m.name
            )
        fields[ext] = m
    return key, fields
