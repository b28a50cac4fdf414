"""DALI's webdataset index (`.idx`, version v1.2): written beside each tar so loaders never scan tars."""

from __future__ import annotations

from collections.abc import Sequence

from shards.errors import ShardFormatError
from shards.tario import TarMember

__all__ = ["IDX_VERSION", "format_index", "parse_index"]

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
