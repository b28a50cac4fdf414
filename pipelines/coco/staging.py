"""COCO's records staged beside the output, so that only small references cross Beam.

Measured with `python -m pipelines.bench_coco` on a 458 MB instances JSON (118,287 images, 860,001 annotations):
with the annotations grouped by a Beam GroupByKey the job's processes peaked at 3.2 GB, since the local runner holds
a GroupByKey in memory (a plain `json.load` of the file: 2.9 GB). So:

1. `stage_json`: each JSON is streamed once (ijson) into `BUCKETS` files by a hash of the image id (a line per
   image record or annotation), with the ids of its annotations checked for repeats as it goes.
2. `assemble_bucket`: once every JSON is staged, each bucket is read on its own (1/64 of the annotations), its
   images put together and checked (annotations.assemble), and each image's record written to the bucket's
   records file; what crosses Beam is (file name, where its record is) and the quarantine entries.
3. The shard writers read each image's record with a ranged read beside its image bytes.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from pipelines.coco.annotations import assemble, iter_items
from pipelines.coco.layout import JsonUnit, open_json
from pipelines.common.options import use_storage_options
from shards import storage

__all__ = ["BUCKETS", "assemble_bucket", "read_record", "stage_json"]

BUCKETS = 64
_FLUSH = 1 << 20


def _bucket(image_id: Any) -> int:
    return zlib.crc32(str(image_id).encode()) % BUCKETS


def _compact(item: Any) -> str:
    return json.dumps(item, separators=(",", ":"))


def stage_json(unit: JsonUnit, index: int, staging: str, storage_options: dict) -> Iterator[int]:
    """Stream one JSON into `<staging>/u<index>-<bucket>.jsonl` ([kind, image id, item] per line); yields how many
    lines it wrote (the bucket step waits for every JSON's count)."""
    use_storage_options(storage_options)
    buffers: list[list[bytes]] = [[] for _ in range(BUCKETS)]
    sizes = [0] * BUCKETS
    n = 0
    with contextlib.ExitStack() as stack:
        outs = [
            stack.enter_context(storage.atomic_write(storage.join(staging, f"u{index:02d}-{b:03d}.jsonl")))
            for b in range(BUCKETS)
        ]

        def put(kind: str, image_id: Any, rec: dict) -> None:
            b = _bucket(image_id)
            line = (_compact([kind, image_id, rec]) + "\n").encode()
            buffers[b].append(line)
            sizes[b] += len(line)
            if sizes[b] >= _FLUSH:
                outs[b].write(b"".join(buffers[b]))
                buffers[b], sizes[b] = [], 0

        with open_json(unit) as f:
            for rec in iter_items(f, "images", unit.source):
                put("image", rec.get("id"), rec)
                n += 1
        if unit.kind != "image_info":
            seen: set = set()  # this file's annotation ids: ~70 bytes each, 60 MB for 2017 train's 860k
            with open_json(unit) as f:
                for rec in iter_items(f, "annotations", unit.source):
                    put("duplicate" if rec.get("id") in seen else unit.kind, rec.get("image_id"), rec)
                    seen.add(rec.get("id"))
                    n += 1
        for b in range(BUCKETS):
            outs[b].write(b"".join(buffers[b]))
    yield n


def assemble_bucket(
    b: int,
    staging: str,
    sources: Sequence[tuple[int, str]],
    labels: dict[int, int],
    storage_options: dict,
    _staged: Any = None,
) -> Iterator[tuple[str, Any, Any]]:
    """One bucket's images put together: ("record", file name, where its record is) or ("bad", entry, None)."""
    use_storage_options(storage_options)
    items: dict[Any, list[tuple[str, str, dict]]] = {}
    for index, source in sources:
        for line in storage.read_bytes(storage.join(staging, f"u{index:02d}-{b:03d}.jsonl")).splitlines():
            kind, image_id, rec = json.loads(line)
            items.setdefault(image_id, []).append((kind, source, rec))
    url = storage.join(staging, f"records-{b:03d}.jsonl")
    lines, refs, bad = [], [], []
    offset = 0
    for image_id in sorted(items, key=str):
        for x in assemble(image_id, items[image_id], labels):
            if x[0] == "bad":
                bad.append(("bad", x[1], None))
                continue
            _, name, rec = x
            line = (_compact(rec) + "\n").encode()
            refs.append(
                ("record", name, {"url": url, "offset": offset, "length": len(line) - 1, "id": rec["image"].get("id")})
            )
            lines.append(line)
            offset += len(line)
    storage.write_bytes(url, b"".join(lines))
    yield from refs
    yield from bad


def read_record(ref: dict[str, Any]) -> dict[str, Any]:
    """An image's record, staged by `assemble_bucket`."""
    return json.loads(storage.read_range(ref["url"], ref["offset"], ref["length"]))
