"""The split manifest (`manifest.json`): build, validate, write last and atomically, read.

A split exists only once its manifest does (the manifest is the commit point, written last and atomically): readers
trust the manifest, never directory listings. Version 1 is a split written once (the batch jobs). Version 2 is a
split that grows by generations (the streaming jobs, `shards compact`): every shard entry has the `generation` that
published it, and `generations` lists the live generations, each reconciling on its own (`inputs_seen == num_samples
+ quarantine_count`) and all of them together with the totals (shards/generations.py). This reader reads both; a
version-1 reader refuses version 2 with an error saying so, instead of reading a mix.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shards import storage
from shards.errors import ManifestError, ManifestMissing
from shards.table import TABLE_MIN_SHARDS, ShardTable, read_table, write_table

__all__ = [
    "FORMAT",
    "VERSION",
    "VERSIONS",
    "MANIFEST_NAME",
    "build_manifest",
    "validate_manifest",
    "dumps_manifest",
    "encode_manifest",
    "parse_manifest",
    "write_manifest",
    "read_manifest",
    "split_url_of",
    "check_relpath",
    "check_folder",
]

FORMAT = "shards"
VERSION = 1  # what build_manifest writes; shards/generations.py writes 2
VERSIONS = (1, 2)  # what this reader reads
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


_FOLDER = re.compile(r"(inc|cmp)-[A-Za-z0-9_-]{1,80}")


def check_relpath(path: Any, url: str, what: str) -> None:
    """The one check every path read from a manifest, snapshot or ledger goes through before it is joined to the
    split's URL: a non-empty string, relative, inside the split (no `..`, no scheme), without NUL, control
    characters or backslashes. A hostile manifest must not make `compact` copy or delete outside the split."""
    _require(isinstance(path, str) and path != "", url, f"{what} must be a non-empty string, got {path!r}")
    _require(
        not re.search(r"[\x00-\x1f\x7f\\]", path),
        url,
        f"{what} {path!r} contains a control character or a backslash",
    )
    parts = posixpath.normpath(path).split("/")
    _require(
        not path.startswith("/") and "://" not in path and ".." not in parts and parts != ["."],
        url,
        f"{what} {path!r} must be relative to the manifest and stay inside the split",
    )


def check_folder(name: Any, url: str, what: str) -> None:
    """A generation's folder: one path segment `inc-...` or `cmp-...` (what `new_folder` makes). `collect`
    removes such folders, so nothing else - `.`, `..`, a nested path - may ever stand here."""
    _require(
        isinstance(name, str) and bool(_FOLDER.fullmatch(name)),
        url,
        f"{what} {name!r} is not a generation folder (inc-... or cmp-..., one path segment)",
    )


# segments of letters, digits, _ - and dots, none starting with a dot: what `check_relpath` passes without a doubt
_PLAIN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$"


def _check_relpaths(paths: Any, url: str, what: str) -> None:
    """`check_relpath` over an Arrow column of paths: the plain ones at once, the others one by one."""
    import pyarrow.compute as pc

    plain = pc.fill_null(pc.match_substring_regex(paths, _PLAIN), True)  # no value: not a path to check here
    for i in np.flatnonzero(~plain.to_numpy(zero_copy_only=False)).tolist():
        check_relpath(paths[i].as_py(), url, f"shards[{i}].{what}")


def _validate_table(shards: ShardTable, url: str) -> None:
    """`_validate_shards` over a shard table's columns (a Python loop only for the paths' check)."""
    import pyarrow.compute as pc

    for k in ("path", "num_samples", "num_bytes", "sha256"):
        _require(shards.has(k), url, f"the shard table lacks {k!r}")
    for k in ("num_samples", "num_bytes"):
        bad = np.flatnonzero(shards.column(k) < 0)  # no value (a table's types make every value a whole number)
        _require(not len(bad), url, f"shards[{bad[0] if len(bad) else 0}].{k} has no value")
    paths = shards.column("path")
    _require(paths.null_count == 0, url, "a shard of the table has no 'path'")
    _check_relpaths(paths, url, "path")
    _require(pc.count_distinct(paths).as_py() == len(shards), url, "the shard table lists a path twice")
    sha = shards.column("sha256")
    ok = pc.fill_null(pc.match_substring_regex(sha, "^[0-9a-f]{64}$"), False)
    _require(pc.all(ok).as_py() is not False, url, "a shard's sha256 in the table is not hex")
    tars = pc.ends_with(paths, ".tar")
    if pc.any(tars).as_py():
        _require(shards.has("idx"), url, "the shard table's tars have no 'idx' paths")
        idx = shards.column("idx")
        _require(not pc.any(pc.and_(tars, pc.is_null(idx))).as_py(), url, "a tar of the shard table has no 'idx'")
        _check_relpaths(idx, url, "idx")


def _validate_shards(m: Mapping[str, Any], url: str) -> None:
    shards = m["shards"]
    if isinstance(shards, ShardTable):
        return _validate_table(shards, url)
    _require(isinstance(shards, list), url, "'shards' must be a list")
    paths: set[str] = set()
    for i, s in enumerate(shards):
        where = f"shards[{i}]"
        _require(isinstance(s, dict), url, f"{where} must be an object")
        for k in ("path", "num_samples", "num_bytes", "sha256"):
            _require(k in s, url, f"{where} lacks {k!r}")
        check_relpath(s["path"], url, f"{where}.path")
        _require(s["path"] not in paths, url, f"{where}.path {s['path']!r} is listed twice")
        paths.add(s["path"])
        for k in ("num_samples", "num_bytes"):
            v = s[k]
            _require(isinstance(v, int) and not isinstance(v, bool) and v >= 0, url, f"{where}.{k} is {v!r}")
        _require(isinstance(s["sha256"], str) and bool(_SHA256.match(s["sha256"])), url, f"{where}.sha256 is not hex")
        if s["path"].endswith(".tar"):
            _require("idx" in s, url, f"{where} is a tar without its 'idx' path")
            check_relpath(s["idx"], url, f"{where}.idx")


def validate_manifest(m: Any, *, url: str = "<manifest>") -> None:
    """Raise ManifestError naming `url` and the key unless `m` is a well-formed, self-consistent manifest."""
    _require(isinstance(m, dict), url, "manifest must be a JSON object")
    missing = [k for k in REQUIRED if k not in m]
    _require(not missing, url, f"manifest lacks required key(s) {missing}")
    _require(m["format"] == FORMAT, url, f"'format' is {m['format']!r}, expected {FORMAT!r}")
    _require(
        m["version"] in VERSIONS,
        url,
        f"format version {m['version']!r} is newer than this reader knows ({', '.join(map(str, VERSIONS))}); "
        "upgrade shardkit to read it",
    )
    for k in ("dataset", "split", "created_by"):
        _require(isinstance(m[k], str) and m[k] != "", url, f"{k!r} must be a non-empty string")
    n = m["num_samples"]
    _require(isinstance(n, int) and not isinstance(n, bool) and n >= 0, url, f"'num_samples' is {n!r}")
    _require(isinstance(m["fields"], dict) and m["fields"], url, "'fields' must be a non-empty object")
    _validate_shards(m, url)
    shards = m["shards"]
    total = (
        int(shards.column("num_samples").sum())
        if isinstance(shards, ShardTable)
        else sum(s["num_samples"] for s in shards)
    )
    _require(total == n, url, f"shards hold {total} samples but 'num_samples' says {n}")
    classes = m["classes"]
    if classes is not None:
        _require(isinstance(classes, list) and all(isinstance(c, str) for c in classes), url, "'classes' must be names")
        _require(len(set(classes)) == len(classes), url, "'classes' has duplicate names")
    q = m["quarantine"]
    _require(isinstance(q, dict) and "count" in q and "path" in q, url, "'quarantine' needs 'count' and 'path'")
    _require(isinstance(q["count"], int) and q["count"] >= 0, url, f"quarantine count is {q['count']!r}")
    check_relpath(q["path"], url, "quarantine.path")
    src = m["source"]
    _require(isinstance(src, dict) and "inputs_seen" in src, url, "'source' needs 'inputs_seen'")
    seen = src["inputs_seen"]
    _require(
        seen == n + q["count"],
        url,
        f"counts do not add up: {seen} inputs seen but {n} samples + {q['count']} quarantined = {n + q['count']}",
    )
    _require(isinstance(m["params"], dict), url, "'params' must be an object")
    for name, paths in (m.get("side_tables") or {}).items():
        _require(isinstance(paths, list), url, f"side_tables.{name} must be a list of paths")
        for j, path in enumerate(paths):
            check_relpath(path, url, f"side_tables.{name}[{j}]")
    if m["version"] >= 2:
        _validate_generations(m, url)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _validate_generations(m: Mapping[str, Any], url: str) -> None:
    """Version 2: each live generation reconciles on its own, the generations add up to the totals, and every
    shard belongs to a live generation with the count of shards that generation says it has."""
    gens = m.get("generations")
    _require(isinstance(gens, list) and gens, url, "version 2 needs a non-empty 'generations' list")
    _require(_whole(m.get("generation")), url, f"'generation' is {m.get('generation')!r}")
    numbers = [g.get("generation") if isinstance(g, dict) else None for g in gens]
    _require(all(_whole(n) for n in numbers), url, "every generation needs a whole 'generation' number")
    _require(numbers == sorted(set(numbers)), url, f"generations {numbers} are not increasing")
    _require(m["generation"] == numbers[-1], url, f"'generation' {m['generation']} is not the newest, {numbers[-1]}")
    per_gen: dict[int, int] = {}
    if isinstance(m["shards"], ShardTable):
        of = m["shards"].column("generation") if m["shards"].has("generation") else np.full(len(m["shards"]), -1)
        stray = np.flatnonzero(~np.isin(of, numbers))
        _require(not len(stray), url, f"shards[{stray[0] if len(stray) else 0}] is in no live generation")
        per_gen = {int(g): int(n) for g, n in zip(*np.unique(of, return_counts=True), strict=True)}
    for i, s in enumerate(m["shards"] if not isinstance(m["shards"], ShardTable) else ()):
        _require(s.get("generation") in numbers, url, f"shards[{i}] is in no live generation ({s.get('generation')!r})")
        per_gen[s["generation"]] = per_gen.get(s["generation"], 0) + 1
    for g in gens:
        where = f"generation {g['generation']}"
        check_folder(g.get("folder"), url, f"{where}: folder")
        for k in ("inputs", "quarantine"):
            check_relpath(g.get(k), url, f"{where}: {k}")
        for k in ("num_samples", "quarantine_count", "inputs_seen", "shards"):
            _require(_whole(g.get(k)), url, f"{where}: {k!r} is {g.get(k)!r}")
        _require(
            g["inputs_seen"] == g["num_samples"] + g["quarantine_count"],
            url,
            f"{where}: counts do not add up: {g['inputs_seen']} inputs seen but {g['num_samples']} samples + "
            f"{g['quarantine_count']} quarantined",
        )
        _require(
            per_gen.get(g["generation"], 0) == g["shards"],
            url,
            f"{where} lists {g['shards']} shards, the manifest has {per_gen.get(g['generation'], 0)} of it",
        )
    for total, key in (
        (m["num_samples"], "num_samples"),
        (m["quarantine"]["count"], "quarantine_count"),
        (m["source"]["inputs_seen"], "inputs_seen"),
    ):
        _require(total == sum(g[key] for g in gens), url, f"the generations' {key} do not add up to {total}")
    retired = m.get("retired", [])
    _require(isinstance(retired, list), url, "'retired' must be a list")
    for i, r in enumerate(retired):
        _require(isinstance(r, dict), url, f"retired[{i}] must be an object")
        check_folder(r.get("folder"), url, f"retired[{i}].folder")
        _require(_whole(r.get("generation")) and _whole(r.get("by")), url, f"retired[{i}] needs whole generation, by")
        _require(
            isinstance(r.get("at"), (int, float)) and not isinstance(r.get("at"), bool),
            url,
            f"retired[{i}].at is {r.get('at')!r}",
        )


def dumps_manifest(m: Mapping[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, so the same manifest always gives the same bytes."""
    return (json.dumps(m, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def split_url_of(url: str) -> str:
    """The split folder for a split URL or its manifest URL."""
    url = url.rstrip("/")
    return url[: -len(MANIFEST_NAME) - 1] if url.endswith("/" + MANIFEST_NAME) else url


def encode_manifest(split_url: str, m: Mapping[str, Any]) -> bytes:
    """The bytes of manifest.json for `m`: canonical JSON, its shard list written first as a shard table
    (shards/table.py) when it has `TABLE_MIN_SHARDS` shards or more."""
    body = {k: v for k, v in m.items() if k != "shard_table"}
    if len(m["shards"]) >= TABLE_MIN_SHARDS:
        body.pop("shards")
        body["shard_table"] = write_table(split_url_of(split_url), m["shards"])
    elif isinstance(m["shards"], ShardTable):
        body["shards"] = list(m["shards"])
    return dumps_manifest(body)


def write_manifest(split_url: str, m: Mapping[str, Any]) -> str:
    """Validate and publish the manifest atomically; call it last, after every shard is published."""
    url = storage.join(split_url_of(split_url), MANIFEST_NAME)
    validate_manifest(m, url=url)
    storage.write_bytes(url, encode_manifest(split_url, m))
    return url


def _why_missing(murl: str) -> str:
    """A missing bucket says so (it otherwise reads like a split never written)."""
    if not storage.is_local(murl):
        protocol, rest = murl.split("://", 1)
        bucket = rest.split("/", 1)[0]
        if not storage.exists(f"{protocol}://{bucket}"):
            return f"the bucket {bucket!r} does not exist (or these credentials cannot see it)"
    return "no manifest; the split does not exist or its conversion never finished"


def read_manifest(url: str) -> dict[str, Any]:
    """Read and validate the manifest of a split (`url` is the split or its manifest.json)."""
    murl = storage.join(split_url_of(url), MANIFEST_NAME)
    try:
        raw = storage.read_bytes(murl)
    except FileNotFoundError:
        raise ManifestMissing(f"{murl}: {_why_missing(murl)}") from None
    return parse_manifest(raw, murl, split_url_of(url))


def parse_manifest(raw: bytes, url: str, split_url: str) -> dict[str, Any]:
    """A manifest (or a generation's snapshot) of the split at `split_url` from its bytes at `url`, its shard table
    read, and validated."""
    try:
        m = json.loads(raw)
    except ValueError as e:
        raise ManifestError(f"{url}: manifest is not valid JSON ({e})") from None
    if isinstance(m, dict) and "shard_table" in m and "shards" not in m:
        ref = m["shard_table"]
        _require(isinstance(ref, dict) and isinstance(ref.get("path"), str), url, "'shard_table' needs a 'path'")
        check_relpath(ref["path"], url, "shard_table.path")
        try:
            m["shards"] = read_table(split_url, ref, url)
        except ValueError as e:
            raise ManifestError(str(e)) from None
    validate_manifest(m, url=url)
    return m
