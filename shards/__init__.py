"""The shard format (version 1): WebDataset tars with DALI indexes, Arrow IPC shards, manifests, storage."""

from __future__ import annotations

from shards.errors import ManifestError, SampleKeyError, ShardError, ShardFormatError

__version__ = "0.1.0"

__all__ = ["__version__", "ShardError", "ShardFormatError", "ManifestError", "SampleKeyError"]
