"""Looking into a split: list shards, find and inspect one sample, draw a preview grid of its images."""

from __future__ import annotations

import io
import json
from typing import Any

from shards import storage
from shards.errors import ShardFormatError
from shards.idx import parse_index, sample_members
from shards.keys import split_member_name
from shards.manifest import read_manifest, split_url_of
from shards.tario import BLOCK, check_indexed_member
from shards.wds import iter_samples

__all__ = ["find_sample", "first_samples", "describe_field", "draw_preview"]

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "JPEG")


def find_sample(url: str, key: str | None = None) -> tuple[str, dict[str, bytes], dict[str, Any]]:
    """(shard URL, {ext: bytes}, manifest) for `key`, located through the indexes and fetched by ranged reads."""
    split = split_url_of(url)
    manifest = read_manifest(split)
    for entry in manifest["shards"]:
        if entry["path"].endswith(".arrow"):
            found = _arrow_row(storage.join(split, entry["path"]), key)
            if found is not None:
                return storage.join(split, entry["path"]), found, manifest
            continue
        if "idx" not in entry:
            continue
        shard_url = storage.join(split, entry["path"])
        idx_url = storage.join(split, entry["idx"])
        for members in parse_index(storage.read_bytes(idx_url), url=idx_url):
            k = split_member_name(members[0].name)[0]
            if key is None or k == key:
                return shard_url, {"__key__": k.encode(), **_checked_fields(shard_url, entry, members)}, manifest
    raise KeyError(f"{split}: no sample with key {key!r}" if key else f"{split}: the split holds no samples")


def _checked_fields(shard_url: str, entry: dict[str, Any], members: list) -> dict[str, bytes]:
    """A sample's fields read through the index, each entry checked first as the reference reader would
    (`idx.sample_members`, then the member's own header: `tario.check_indexed_member`). A sample's members are
    adjacent in a shard, so they come in one ranged read from the first header to the last member's end; where an
    index says they are not, one read per member."""
    _, checked = sample_members(members, entry["num_bytes"], url=shard_url)
    if not checked:
        return {}
    start = min(m.offset for m in checked.values()) - BLOCK
    end = max(m.offset + m.size for m in checked.values())
    if end - start <= sum(2 * BLOCK + m.size for m in checked.values()):
        span = storage.read_range(shard_url, start, end - start)
        pieces = {ext: span[m.offset - BLOCK - start : m.offset + m.size - start] for ext, m in checked.items()}
    else:
        pieces = {ext: storage.read_range(shard_url, m.offset - BLOCK, BLOCK + m.size) for ext, m in checked.items()}
    fields: dict[str, bytes] = {}
    for ext, m in checked.items():
        check_indexed_member(pieces[ext][:BLOCK], m, url=shard_url)
        fields[ext] = pieces[ext][BLOCK:]
    return fields


def _arrow_row(shard_url: str, key: str | None) -> dict[str, Any] | None:
    """The row of an Arrow shard whose `id` (or first column) is `key` (the first row when key is None)."""
    import pyarrow as pa

    with storage.open_read(shard_url) as f:
        table = pa.ipc.open_file(pa.BufferReader(f.read())).read_all()
    if table.num_rows == 0:
        return None
    keys = table.column("id" if "id" in table.column_names else 0).to_pylist()
    if key is not None and key not in keys:
        return None
    row = table.slice(keys.index(key) if key is not None else 0, 1).to_pylist()[0]
    return {"__key__": str(keys[keys.index(key) if key is not None else 0]).encode(), **row}


def _describe_value(name: str, value: Any, classes: list[str] | None) -> str:
    """A Python value of an Arrow column, in one line."""
    if value is None:
        return "null"
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    if isinstance(value, list):
        head = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value[:6])
        names = ""
        if name == "labels" and classes:
            names = " (" + ", ".join(classes[v] for v in value[:4] if isinstance(v, int) and v < len(classes)) + ")"
        return f"{len(value)} values [{head}{', ...' if len(value) > 6 else ''}]{names}"
    return str(value)


def first_samples(url: str, n: int) -> tuple[list[tuple[str, dict[str, bytes]]], dict[str, Any]]:
    split = split_url_of(url)
    manifest = read_manifest(split)
    out: list[tuple[str, dict[str, bytes]]] = []
    for entry in manifest["shards"]:
        if not entry["path"].endswith(".tar"):
            continue
        shard_url = storage.join(split, entry["path"])
        with storage.open_read(shard_url) as f:
            for key, sample in iter_samples(io.BytesIO(f.read()), url=shard_url):
                out.append((key, sample))
                if len(out) >= n:
                    return out, manifest
    return out, manifest


def describe_field(ext: str, data: bytes, classes: list[str] | None) -> str:
    """A one-line human description of one field's value (bytes of a tar member, or an Arrow row's value)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        return _describe_value(ext, data, classes)
    if ext.lower() in IMAGE_EXTS:
        try:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                return f"{im.format} image {im.width}x{im.height} {im.mode}, {len(data)} bytes"
        except Exception as e:
            return f"undecodable image ({e}), {len(data)} bytes"
    if ext == "cls":
        text = data.decode("ascii", "replace").strip()
        name = classes[int(text)] if classes and text.isdigit() and int(text) < len(classes) else None
        return f"{text}" + (f" ({name})" if name else "")
    if ext == "json":
        try:
            return json.dumps(json.loads(data), ensure_ascii=False)[:400]
        except ValueError:
            return f"invalid JSON, {len(data)} bytes"
    if ext in ("txt", "text", "id") and len(data) < 400:
        return data.decode("utf-8", "replace")
    return f"{len(data)} bytes"


def _label(sample: dict[str, bytes], classes: list[str] | None) -> str:
    if "cls" in sample:
        return describe_field("cls", sample["cls"], classes)
    for ext in ("txt", "json"):
        if ext in sample:
            return sample[ext][:40].decode("utf-8", "replace")
    return ""


def draw_preview(url: str, out: str, *, n: int = 16, tile: int = 160) -> int:
    """Write a PNG grid of the first `n` images of a split with key and label under each; return the count."""
    from PIL import Image, ImageDraw

    samples, manifest = first_samples(url, n)
    pictures = []
    for key, sample in samples:
        ext = next((e for e in sample if e.lower() in IMAGE_EXTS), None)
        if ext is None:
            continue
        try:
            im = Image.open(io.BytesIO(sample[ext])).convert("RGB")
        except Exception as e:
            raise ShardFormatError(f"image does not decode: {e}", url=url, member=f"{key}.{ext}") from None
        im.thumbnail((tile, tile))
        pictures.append((key, _label(sample, manifest.get("classes")), im))
    if not pictures:
        raise ValueError(f"{url}: no image fields among the first {n} samples")
    cols = min(4, len(pictures))
    rows = -(-len(pictures) // cols)
    cell_h = tile + 30
    grid = Image.new("RGB", (cols * tile, rows * cell_h), "white")
    draw = ImageDraw.Draw(grid)
    for i, (key, label, im) in enumerate(pictures):
        x, y = (i % cols) * tile, (i // cols) * cell_h
        grid.paste(im, (x + (tile - im.width) // 2, y + (tile - im.height) // 2))
        draw.text((x + 3, y + tile + 2), key[:26], fill="black")
        draw.text((x + 3, y + tile + 15), label[:26], fill="darkblue")
    with storage.atomic_write(out) as f:
        grid.save(f, format="PNG")
    return len(pictures)
