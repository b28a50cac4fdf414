"""Rules for sample keys and field names (extensions) in a split, checked before anything is written."""

from __future__ import annotations

import re

from shards.errors import SampleKeyError

__all__ = ["validate_key", "validate_ext", "split_member_name", "shard_of", "shuffle_hash"]

# Whitespace would break DALI's space-separated index; dots and slashes would make the key ambiguous.
_BAD_KEY = re.compile(r"[\s./\\\x00-\x1f\x7f]")
_BAD_EXT = re.compile(r"[\s/\\\x00-\x1f\x7f]")


def validate_key(key: str, *, url: str = "<stream>") -> None:
    """Raise SampleKeyError unless `key` is a non-empty string without dots, slashes, backslashes or whitespace."""
    if not isinstance(key, str) or not key:
        raise SampleKeyError(url=url, reason=f"sample key {key!r} must be a non-empty string")
    bad = _BAD_KEY.search(key)
    if bad:
        raise SampleKeyError(
            url=url,
            reason=f"sample key {key!r} contains {bad.group()!r}; keys may not contain dots, slashes or "
            "whitespace (a dot separates the key from the field name, e.g. 'n01440764_10026.jpg')",
        )


def validate_ext(ext: str, *, key: str, url: str = "<stream>") -> None:
    """Raise SampleKeyError unless `ext` is a usable field name: non-empty, no slashes, no whitespace."""
    if not isinstance(ext, str) or not ext or ext.startswith(".") or ext.endswith("."):
        raise SampleKeyError(url=url, reason=f"sample {key!r} has an invalid field name {ext!r}")
    bad = _BAD_EXT.search(ext)
    if bad:
        raise SampleKeyError(url=url, reason=f"sample {key!r} field {ext!r} contains {bad.group()!r}")


def split_member_name(name: str) -> tuple[str, str]:
    """'dir/n01_1.seg.png' -> ('dir/n01_1', 'seg.png'): the key ends at the first dot of the basename.

    The same rule as webdataset and DALI's wds2idx, so all three agree on which members form a sample.
    """
    dot = name.find(".", name.rfind("/") + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :]


def shuffle_hash(key: str, seed: int) -> int:
    """A seeded 64-bit hash of a key. Ordering by it is a global shuffle that is the same on every run and
    every machine; shard assignment and in-shard order both come from it."""
    import hashlib

    digest = hashlib.blake2b(key.encode(), digest_size=8, key=seed.to_bytes(8, "little", signed=True)).digest()
    return int.from_bytes(digest, "little")


def shard_of(key: str, seed: int, shards: int) -> int:
    """The shard of `shards` a key belongs to: the top of its seeded hash scaled to the count (uniform, and the
    same on every run, so re-runs and increments write byte-identical shards). The one place it is computed."""
    return (shuffle_hash(key, seed) * shards) >> 64
