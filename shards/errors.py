"""Exceptions raised for bad shards, manifests and keys; every message names the URL and the key or member."""

from __future__ import annotations

__all__ = [
    "ShardError",
    "ShardFormatError",
    "ManifestError",
    "ManifestMissing",
    "GenerationCollected",
    "SampleKeyError",
]


class ShardError(ValueError):
    """Base class: something about a shard, index or manifest is wrong (bad data, not a bug)."""


class ShardFormatError(ShardError):
    """A tar, index or Arrow shard is malformed: truncated, hostile, or inconsistent with its index."""

    def __init__(self, message: str, *, url: str = "<stream>", member: str | None = None) -> None:
        where = f"{url}" + (f" (member {member!r})" if member is not None else "")
        super().__init__(f"{where}: {message}")
        self.url = url
        self.member = member


class ManifestError(ShardError):
    """A manifest is missing, malformed, or its counts do not add up."""


class ManifestMissing(ManifestError):
    """No manifest where a split should be: the split does not exist (or its conversion never finished)."""


class GenerationCollected(ManifestError):
    """A generation's snapshot reads generations that a compaction retired and that were collected after the
    grace period: the generation can no longer be read (a newer one holds the same samples)."""


class SampleKeyError(ShardError):
    """A sample key or field name breaks the format rules (dots, slashes, duplicates, length). The message is
    `<url>: <reason>` where a URL is known; `reason` alone is the rule that was broken."""

    def __init__(self, reason: str, *, url: str | None = None) -> None:
        super().__init__(f"{url}: {reason}" if url is not None else reason)
        self.url = url
        self.reason = reason
