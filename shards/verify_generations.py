"""`shards verify` on a split that grows by generations: every generation's files, ledger and snapshot."""

from __future__ import annotations

import json
import re
from typing import Any

from shards import storage
from shards.errors import GenerationCollected, ShardError
from shards.generations import COMPACT_LOCK, COMPACT_STALE, live_holder, read_generation, snapshot_path
from shards.quarantine import read_quarantine

__all__ = ["check_generations"]


def check_generations(split: str, manifest: dict[str, Any]) -> list[str]:
    """Problems of the live generations (their quarantine and ledger files), of every published snapshot (each
    must read, or say it was compacted away), and stray folders no generation or pending increment owns."""
    problems = []
    for g in manifest["generations"]:
        where = f"{split}: generation {g['generation']}"
        try:
            n = len(read_quarantine(storage.join(split, g["quarantine"])))
            if n != g["quarantine_count"]:
                problems.append(
                    f"{where}: {g['quarantine']} holds {n} entries, the manifest says {g['quarantine_count']}"
                )
        except FileNotFoundError:
            problems.append(f"{where}: {g['quarantine']} is missing")
        try:
            rows = [json.loads(x) for x in storage.read_bytes(storage.join(split, g["inputs"])).splitlines()]
            if len(rows) < g.get("input_files", 0):
                problems.append(f"{where}: {g['inputs']} lists {len(rows)} files, fewer than {g['input_files']}")
        except FileNotFoundError:
            problems.append(f"{where}: its ledger {g['inputs']} is missing (a watcher would convert its inputs again)")
    for n in range(1, manifest["generation"] + 1):
        if not storage.exists(storage.join(split, snapshot_path(n))):
            continue  # numbers are only taken by published generations, but a snapshot may have been removed
        try:
            read_generation(split, n)
        except GenerationCollected:
            continue  # compacted and collected, as it should be: not a problem
        except ShardError as e:
            problems.append(str(e))
    owned = {g["folder"] for g in manifest["generations"]}
    owned |= {r["folder"] for r in manifest.get("retired", []) if not r.get("collected")}
    pending = {n.removeprefix("intent-").removesuffix(".jsonl") for n in storage.listdir(storage.join(split, "_watch"))}
    for name in storage.listdir(split):
        if re.fullmatch(r"(inc|cmp)-.+", name) and name not in owned and name not in pending:
            if name.startswith("cmp-") and live_holder(split, COMPACT_LOCK, COMPACT_STALE):
                continue  # a compaction at work: its folder is published or removed when it ends
            problems.append(
                f"{storage.join(split, name)}: folder of no generation (an interrupted compaction, "
                "which the next `shards compact` removes, or a rejected increment); safe to remove"
            )
    return problems
