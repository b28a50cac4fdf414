"""`shards verify`: re-hash every shard against the manifest, check every index against its tar, count samples."""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Any

from shards import storage
from shards.arrow import read_arrow_shard, schema_from_json
from shards.errors import ManifestMissing, ShardError, ShardFormatError
from shards.idx import parse_index
from shards.manifest import read_manifest, split_url_of
from shards.quarantine import read_quarantine
from shards.wds import iter_sample_members

__all__ = ["VerifyReport", "verify_split"]


@dataclasses.dataclass
class VerifyReport:
    url: str
    num_shards: int = 0
    num_samples: int = 0
    num_bytes: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_tar(
    split: str, data: bytes, url: str, entry: dict[str, Any], manifest: dict[str, Any], keys: set[str]
) -> int:
    required = set(manifest["fields"])
    allowed = required | set(manifest.get("optional_fields", ()))
    groups = []
    for key, members in iter_sample_members(io.BytesIO(data), url=url):
        exts = {m.name[len(key) + 1 :] for m in members}
        missing, extra = required - exts, exts - allowed
        if missing:
            raise ShardFormatError(f"sample {key!r} lacks declared field(s) {sorted(missing)}", url=url)
        if extra:
            raise ShardFormatError(f"sample {key!r} has undeclared field(s) {sorted(extra)}", url=url)
        if key in keys:
            raise ShardFormatError(f"sample key {key!r} also appears in another shard of the split", url=url)
        keys.add(key)
        groups.append((key, members))
    if len(groups) != entry["num_samples"]:
        raise ShardFormatError(f"holds {len(groups)} samples but the manifest says {entry['num_samples']}", url=url)
    idx_url = storage.join(split, entry["idx"])
    try:
        index = parse_index(storage.read_bytes(idx_url), url=idx_url)
    except FileNotFoundError:
        raise ShardFormatError("index file is missing", url=idx_url) from None
    if len(index) != len(groups):
        raise ShardFormatError(f"index lists {len(index)} samples but the tar holds {len(groups)}", url=idx_url)
    for (key, members), indexed in zip(groups, index, strict=True):
        if indexed != members:
            raise ShardFormatError(
                f"index disagrees with the tar at sample {key!r}: index says "
                f"{[(m.name, m.offset, m.size) for m in indexed]}, tar has "
                f"{[(m.name, m.offset, m.size) for m in members]}",
                url=idx_url,
            )
    return len(groups)


def _check_arrow(data: bytes, url: str, entry: dict[str, Any], manifest: dict[str, Any]) -> int:
    table = read_arrow_shard(io.BytesIO(data), url=url, schema=schema_from_json(manifest["fields"]))
    if table.num_rows != entry["num_samples"]:
        raise ShardFormatError(f"holds {table.num_rows} rows but the manifest says {entry['num_samples']}", url=url)
    return table.num_rows


def _check_shard(split: str, entry: dict[str, Any], manifest: dict[str, Any], keys: set[str]) -> int:
    url = storage.join(split, entry["path"])
    try:
        data = storage.read_bytes(url)
    except FileNotFoundError:
        raise ShardFormatError("shard is missing", url=url) from None
    if len(data) != entry["num_bytes"]:
        raise ShardFormatError(
            f"is {len(data)} bytes but the manifest says {entry['num_bytes']} (truncated or overwritten)", url=url
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        try:  # a damaged header can name the member; damaged data cannot
            if entry["path"].endswith(".tar"):
                _check_tar(split, data, url, entry, manifest, set(keys))
        except ShardFormatError as e:
            raise ShardFormatError(f"sha256 mismatch, and {e}", url=url) from None
        raise ShardFormatError(
            f"sha256 mismatch: manifest says {entry['sha256'][:16]}…, file has {digest[:16]}… "
            "(flipped or overwritten bytes)",
            url=url,
        )
    if entry["path"].endswith(".tar"):
        return _check_tar(split, data, url, entry, manifest, keys)
    if entry["path"].endswith(".arrow"):
        return _check_arrow(data, url, entry, manifest)
    raise ShardFormatError("unknown shard type (expected .tar or .arrow)", url=url)


def _strays(split: str, manifest: dict) -> list[str]:
    """Files in the split folder that no reader will ever look at: temporaries of an interrupted writer and
    shard files the manifest does not list (garbage from an interrupted run with other options)."""
    import re

    listed = {e["path"] for e in manifest["shards"]} | {e.get("idx") for e in manifest["shards"]}
    table = (manifest.get("shard_table") or {}).get("path")
    out = []
    for name in storage.listdir(split):
        if re.match(storage.TEMPORARY_NAME, name):
            out.append(
                f"{storage.join(split, name)}: stray temporary of an interrupted write (a re-run of the job "
                "removes it once its writer is gone)"
            )
        elif re.fullmatch(r"shard-\d{6}\.(tar|idx|arrow)", name) and name not in listed:
            out.append(f"{storage.join(split, name)}: stray shard file the manifest does not list")
        elif re.fullmatch(r"shards-[0-9a-f]{16}\.parquet", name) and name != table and manifest["version"] == 1:
            out.append(f"{storage.join(split, name)}: stray shard table the manifest does not name")
    return out  # (a split of generations keeps the tables its snapshots name)


def verify_split(url: str) -> VerifyReport:
    """Check a whole split; every problem found is listed (one per shard at most), none is raised."""
    split = split_url_of(url)
    report = VerifyReport(url=split)
    try:
        manifest = read_manifest(split)
    except ManifestMissing:
        raise  # nothing to verify: a usage error (exit 2), not a problem found in a split
    except ShardError as e:
        report.problems.append(str(e))
        return report
    keys: set[str] = set()
    for entry in manifest["shards"]:
        try:
            report.num_samples += _check_shard(split, entry, manifest, keys)
            report.num_bytes += entry["num_bytes"]
            report.num_shards += 1
        except ShardError as e:
            report.problems.append(str(e))
    report.problems += _strays(split, manifest)
    if manifest["version"] >= 2:
        from shards.verify_generations import check_generations

        report.problems += check_generations(split, manifest)
    q = manifest["quarantine"]
    qurl = storage.join(split, q["path"])
    try:
        n = len(read_quarantine(qurl))
        if n != q["count"]:
            report.problems.append(f"{qurl}: holds {n} entries but the manifest says {q['count']}")
    except FileNotFoundError:
        if q["count"]:
            report.problems.append(f"{qurl}: missing, but the manifest counts {q['count']} quarantined inputs")
    except ShardError as e:
        report.problems.append(str(e))
    return report
