"""Arrow IPC shards and the manifest: round trips (Hypothesis) and the errors bad input gets."""

from __future__ import annotations

import copy
import io
import json

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shards.arrow import ArrowShardWriter, read_arrow_shard, schema_from_json, schema_to_json
from shards.errors import ManifestError, ShardFormatError
from shards.manifest import build_manifest, dumps_manifest, read_manifest, validate_manifest, write_manifest

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("labels", pa.list_(pa.int32())),
        ("mean_rgb", pa.list_(pa.float32(), 4)),
        ("rgb", pa.list_(pa.list_(pa.uint8(), 3))),
        ("num_frames", pa.int32()),
    ]
)
f32 = st.floats(width=32, allow_nan=False)
rows_st = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.text(max_size=8),
            "labels": st.lists(st.integers(0, 3861), max_size=5),
            "mean_rgb": st.lists(f32, min_size=4, max_size=4),
            "rgb": st.lists(st.lists(st.integers(0, 255), min_size=3, max_size=3), max_size=4),
            "num_frames": st.integers(0, 300),
        }
    ),
    max_size=20,
)


@settings(max_examples=100, deadline=None)
@given(rows_st, st.integers(1, 7))
def test_arrow_round_trip(rows, batch):
    buf = io.BytesIO()
    with ArrowShardWriter(buf, SCHEMA) as w:
        for i in range(0, len(rows), batch):
            w.write_rows(rows[i : i + batch])
    assert w.num_rows == len(rows)
    table = read_arrow_shard(io.BytesIO(buf.getvalue()), schema=SCHEMA)
    assert table.to_pylist() == rows


def test_arrow_schema_is_enforced_and_survives_the_manifest():
    assert schema_from_json(schema_to_json(SCHEMA)).equals(SCHEMA)
    w = ArrowShardWriter(io.BytesIO(), SCHEMA, url="x.arrow")
    with pytest.raises(ShardFormatError, match=r"x\.arrow.*declared schema"):
        w.write_rows([{"id": "a", "labels": ["not a number"], "mean_rgb": [0, 0, 0, 0], "rgb": [], "num_frames": 1}])
    other = pa.schema([("id", pa.string())])
    buf = io.BytesIO()
    with ArrowShardWriter(buf, other) as w2:
        w2.write_rows([{"id": "a"}])
    with pytest.raises(ShardFormatError, match="differs from the declared"):
        read_arrow_shard(io.BytesIO(buf.getvalue()), url="y.arrow", schema=SCHEMA)
    with pytest.raises(ShardFormatError, match=r"z\.arrow: not a readable Arrow IPC file"):
        read_arrow_shard(io.BytesIO(b"garbage" * 20), url="z.arrow")


entry_st = st.fixed_dictionaries(
    {
        "num_samples": st.integers(0, 10**6),
        "num_bytes": st.integers(0, 10**12),
        "sha256": st.text("0123456789abcdef", min_size=64, max_size=64),
    }
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(entry_st, max_size=8),
    st.integers(0, 50),
    st.none() | st.lists(st.text(min_size=1, max_size=10), unique=True, max_size=20),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4),
)
def test_manifest_round_trip(entries, quarantined, classes, params):
    shards = [{**e, "path": f"shard-{i:06d}.tar", "idx": f"shard-{i:06d}.idx"} for i, e in enumerate(entries)]
    n = sum(e["num_samples"] for e in entries)
    m = build_manifest(
        dataset="d",
        split="train",
        fields={"jpg": "image/jpeg"},
        shards=shards,
        source={"url": "/x", "inputs_seen": n + quarantined},
        quarantine_count=quarantined,
        classes=classes,
        params=params,
    )
    text = dumps_manifest(m)
    back = json.loads(text)
    validate_manifest(back)
    assert back == m and dumps_manifest(back) == text


def _good() -> dict:
    return build_manifest(
        dataset="d",
        split="train",
        fields={"jpg": "image/jpeg"},
        shards=[
            {
                "path": "shard-000000.tar",
                "idx": "shard-000000.idx",
                "num_samples": 3,
                "num_bytes": 10,
                "sha256": "a" * 64,
            }
        ],
        source={"url": "/x", "inputs_seen": 4},
        quarantine_count=1,
    )


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m.pop("classes"), r"lacks required key\(s\) \['classes'\]"),
        (lambda m: m.update(version=3), "format version 3 is newer than this reader knows"),
        (lambda m: m.update(num_samples=5), "shards hold 3 samples but 'num_samples' says 5"),
        (lambda m: m["source"].update(inputs_seen=9), "counts do not add up: 9 inputs seen but 3 samples"),
        (lambda m: m["shards"][0].update(path="../escape.tar"), "must be relative to the manifest"),
        (lambda m: m["shards"][0].pop("idx"), "tar without its 'idx'"),
        (lambda m: m["shards"][0].update(sha256="xyz"), "sha256 is not hex"),
        (lambda m: m.update(classes=["a", "a"]), "duplicate names"),
    ],
)
def test_manifest_validation_names_the_problem(mutate, message):
    m = copy.deepcopy(_good())
    mutate(m)
    with pytest.raises(ManifestError, match=message):
        validate_manifest(m, url="s3://b/d/train/manifest.json")


def test_manifest_write_read(tmp_path):
    m = _good()
    url = write_manifest(str(tmp_path / "train"), m)
    assert url.endswith("manifest.json")
    assert read_manifest(str(tmp_path / "train")) == m == read_manifest(url)
    with pytest.raises(ManifestError, match="no manifest; the split does not exist"):
        read_manifest(str(tmp_path / "nope"))
    (tmp_path / "train" / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(str(tmp_path / "train"))
