"""`quarantine.jsonl`: one line per input that was not written, with the stage and the reason."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from shards import storage
from shards.errors import ManifestError

__all__ = ["QUARANTINE_NAME", "quarantine_entry", "dumps_quarantine", "read_quarantine"]

QUARANTINE_NAME = "quarantine.jsonl"


def quarantine_entry(
    *, key: str, source: str, stage: str, reason: str, data: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One quarantine record: the input's key (or best name), where it came from, the stage and why; and, where the
    input is a run of bytes, `data` = {url, offset, length[, deflated]}: where `shards view` finds them to draw the
    input (an image that decodes gets its thumbnail)."""
    entry: dict[str, Any] = {"key": key, "source": source, "stage": stage, "reason": reason}
    if data is not None:
        entry["data"] = dict(data)
    return entry


def dumps_quarantine(entries: Iterable[Mapping[str, Any]]) -> bytes:
    """JSON lines sorted by (key, source), so re-runs write identical bytes."""
    rows = sorted(entries, key=lambda e: (str(e.get("key")), str(e.get("source"))))
    return b"".join((json.dumps(dict(e), sort_keys=True, ensure_ascii=False) + "\n").encode() for e in rows)


def read_quarantine(url: str) -> list[dict[str, Any]]:
    out = []
    for lineno, line in enumerate(storage.read_bytes(url).decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise ManifestError(f"{url}: line {lineno} is not JSON") from None
        if not isinstance(entry, dict) or not {"key", "source", "stage", "reason"} <= entry.keys():
            raise ManifestError(f"{url}: line {lineno} lacks key/source/stage/reason")
        out.append(entry)
    return out
