"""The split manifest (`manifest.json`, format version 1): build, validate, write last and atomically, read.

A split exists only once its manifest does (STYLE 7): readers trust the manifest, never directory listings.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

from shards import storage
from shards.errors import ManifestError

__all__ = [
    "FORMAT",
    "VERSION",
    "MANIFEST_NAME",
    "build_manifest",
    "validate_manifest",
    "dumps_manifest",
    "write_manifest",
    "read_manifest",
    "split_url_of",
]

FORMAT = "shards"
VERSION = 1
MANIFEST_NAME = "manifest.json"
REQUIRED = (
    "format",
    "version",
    "dataset",
    "split",
    "num_samples",
    "fields",
    "shards",
    "classes",
    "quarantine",
    "source",
    "params",
    "created_by",
)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _created_by() -> str:
    from shards import __version__

    return f"shardkit {__version__}"


def build_manifest(
    *,
    dataset: str,
    split: str,
    fields: Mapping[str, Any],
    shards: Sequence[Mapping[str, Any]],
    source: Mapping[str, Any],
    quarantine_count: int = 0,
    classes: Sequence[str] | None = None,
    params: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Assemble and validate a manifest. `source` must hold `url` and `inputs_seen`; extra keys are kept."""
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "dataset": dataset,
        "split": split,
        "num_samples": sum(int(s["num_samples"]) for s in shards),
        "fields": dict(fields),
        "shards": [dict(s) for s in shards],
        "classes": list(classes) if classes is not None else None,
        "quarantine": {"count": quarantine_count, "path": "quarantine.jsonl"},
        "source": dict(source),
        "params": dict(params or {}),
        "created_by": _created_by(),
        **extra,
    }
    validate_manifest(manifest)
    return manifest


def _require(cond: bool, url: str, msg: str) -> None:
    if not cond:
        raise ManifestError(f"{url}: {msg}")


def _check_relpath(path: Any, url: str, what: str) -> None:
    _require(isinstance(path, str) and path != "", url, f"{what} must be a non-empty string, got {path!r}")
    _require(
        not path.startswith("/") and "://" not in path and ".." not in posixpath.normpath(path).split("/"),
        url,
        f"{what} {path!r} must be relative to the manifest and stay inside the split",
    )


def _validate_shards(m: Mapping[str, Any], url: str) -> None:
    shards = m["shards"]
    _require(isinstance(shards, list), url, "'shards' must be a list")
    paths: set[str] = set()
    for i, s in enumerate(shards):
        where = f"shards[{i}]"
        _require(isinstance(s, dict), url, f"{where} must be an object")
        for k in ("path", "num_samples", "num_bytes", "sha256"):
            _require(k in s, url, f"{where} lacks {k!r}")
        _check_relpath(s["path"], url, f"{where}.path")
        _require(s["path"] not in paths, url, f"{where}.path {s['path']!r} is listed twice")
        paths.add(s["path"])
        for k in ("num_samples", "num_bytes"):
            v = s[k]
            _require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, url, f"{where}.{k} is {v!r}")
        _require(isinstance(s["sha256"], str) and bool(_SHA256.match(s["sha256"])), url, f"{where}.sha256 is not hex")
        if s["path"].endswith(".tar"):
            _require("idx" in s, url, f"{where} is a tar without its 'idx' path")
            _check_relpath(s["idx"], url, f"{where}.idx")


def validate_manifest(m: Any, *, url: str = "<manifest>") -> None:
    """Raise ManifestError naming `url` and the key unless `m` is a well-formed, self-consistent manifest."""
    _require(isinstance(m, dict), url, "manifest must be a JSON object")
    missing = [k for k in REQUIRED if k not in m]
    _require(not missing, url, f"manifest lacks required key(s) {missing}")
    _require(m["format"] == FORMAT, url, f"'format' is {m['format']!r}, expected {FORMAT!r}")
    _require(
        m["version"] == VERSION, url, f"format version {m['version']!r} is not {VERSION}, the one this reader knows"
    )
    for k in ("dataset", "split", "created_by"):
        _require(isinstance(m[k], str) and m[k] != "", url, f"{k!r} must be a non-empty string")
    n = m["num_samples"]
    _require(isinstance(n, int) and not isinstance(n, bool) and n >= 0, url, f"'num_samples' is {n!r}")
    _require(isinstance(m["fields"], dict) and m["fields"], url, "'fields' must be a non-empty object")
    _validate_shards(m, url)
    total = sum(s["num_samples"] for s in m["shards"])
    _require(total == n, url, f"shards hold {total} samples but 'num_samples' says {n}")
    classes = m["classes"]
    if classes is not None:
        _require(isinstance(classes, list) and all(isinstance(c, str) for c in classes), url, "'classes' must be names")
        _require(len(set(classes)) == len(classes), url, "'classes' has duplicate names")
    q = m["quarantine"]
    _require(isinstance(q, dict) and "count" in q and "path" in q, url, "'quarantine' needs 'count' and 'path'")
    _require(isinstance(q["count"], int) and q["count"] >= 0, url, f"quarantine count is {q['count']!r}")
    _check_relpath(q["path"], url, "quarantine.path")
    src = m["source"]
    _require(isinstance(src, dict) and "inputs_seen" in src, url, "'source' needs 'inputs_seen'")
    seen = src["inputs_seen"]
    _require(
        seen == n + q["count"],
        url,
        f"counts do not add up: {seen} inputs seen but {n} samples + {q['count']} quarantined = {n + q['count']}",
    )
    _require(isinstance(m["params"], dict), url, "'params' must be an object")


def dumps_manifest(m: Mapping[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, so the same manifest always gives the same bytes."""
    return (json.dumps(m, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def split_url_of(url: str) -> str:
    """The split folder for a split URL or its manifest URL."""
    url = url.rstrip("/")
    return url[: -len(MANIFEST_NAME) - 1] if url.endswith("/" + MANIFEST_NAME) else url


def write_manifest(split_url: str, m: Mapping[str, Any]) -> str:
    """Validate and publish the manifest atomically; call it last, after every shard is published."""
    url = storage.join(split_url_of(split_url), MANIFEST_NAME)
    validate_manifest(m, url=url)
    storage.write_bytes(url, dumps_manifest(m))
    return url


def read_manifest(url: str) -> dict[str, Any]:
    """Read and validate the manifest of a split (`url` is the split or its manifest.json)."""
    murl = storage.join(split_url_of(url), MANIFEST_NAME)
    try:
        raw = storage.read_bytes(murl)
    except FileNotFoundError:
        raise ManifestError(f"{murl}: no manifest; the split does not exist or its conversion never finished") from None
    try:
        m = json.loads(raw)
    except ValueError as e:
        raise ManifestError(f"{murl}: manifest is not valid JSON ({e})") from None
    validate_manifest(m, url=murl)
    return m
