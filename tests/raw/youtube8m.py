"""Raw YouTube-8M: TFRecord files written byte for byte as TensorFlow writes them (no small real file is
published), video and frame level, with damaged records: a flipped payload byte (data CRC), a payload that is
not a proto, a label outside the vocabulary, and a file cut inside its last record.

`LAYOUTS` is what the pipeline conformance suite runs; the first one feeds the loader conformance suite.
"""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

import numpy as np

from pipelines.common.tfrecord import Example, SequenceExample, encode_record

NUM_CLASSES = 3862
FILES = {"train0000": 40, "train0001": 40, "validate0000": 24, "test0000": 24}
DAMAGED = {  # file -> {record number: damage}
    "train0001": {5: "flip", 9: "garbage", 13: "label"},
    "validate0000": {23: "truncate"},
}


def video_id(file: str, i: int) -> str:
    return f"{file[0]}{file[-1]}{i:02d}"  # 4 characters, like the dataset's


def features(file: str, i: int, frame: bool) -> dict:
    """What the record holds, for tests to compare with: id, labels, quantized or float features."""
    rng = np.random.default_rng(zlib.crc32(f"{file}:{i}".encode()))
    labels = sorted({int(x) for x in rng.integers(0, NUM_CLASSES, size=rng.integers(1, 5))})
    out = {"id": video_id(file, i), "labels": labels}
    if frame:
        n = int(rng.integers(3, 40)) if i % 7 else 320  # one video longer than 300 frames
        out["rgb"] = rng.integers(0, 256, size=(n, 1024), dtype=np.uint8)
        out["audio"] = rng.integers(0, 256, size=(n, 128), dtype=np.uint8)
        if i % 3 == 0:
            out["segments"] = ([labels[0]], [5], [10], [1.0])
    else:
        out["mean_rgb"] = rng.normal(size=1024).astype(np.float32)
        out["mean_audio"] = rng.normal(size=128).astype(np.float32)
    return out


def serialize(f: dict, frame: bool, *, bad_label: bool = False) -> bytes:
    labels = [*f["labels"], NUM_CLASSES + 5] if bad_label else f["labels"]
    if not frame:
        e = Example()
        feat = e.features.feature
        feat["id"].bytes_list.value.append(f["id"].encode())
        feat["labels"].int64_list.value.extend(labels)
        feat["mean_rgb"].float_list.value.extend(f["mean_rgb"].tolist())
        feat["mean_audio"].float_list.value.extend(f["mean_audio"].tolist())
        return e.SerializeToString()
    s = SequenceExample()
    ctx = s.context.feature
    ctx["id"].bytes_list.value.append(f["id"].encode())
    ctx["labels"].int64_list.value.extend(labels)
    if "segments" in f:
        seg_labels, starts, ends, scores = f["segments"]
        ctx["segment_labels"].int64_list.value.extend(seg_labels)
        ctx["segment_start_times"].int64_list.value.extend(starts)
        ctx["segment_end_times"].int64_list.value.extend(ends)
        ctx["segment_scores"].float_list.value.extend(scores)
    for name in ("rgb", "audio"):
        fl = s.feature_lists.feature_list[name]
        for row in f[name]:
            fl.feature.add().bytes_list.value.append(row.tobytes())
    return s.SerializeToString()


def write(root: Path, frame: bool, files: dict[str, int] | None = None) -> Path:
    """The layout; the benchmark passes larger `files` ({file stem: records}), undamaged."""
    folder = root / ("frame" if frame else "video")
    folder.mkdir(parents=True)
    for file, n in (files or FILES).items():
        data = bytearray()
        for i in range(n):
            damage = DAMAGED.get(file, {}).get(i) if files is None else None
            payload = serialize(features(file, i, frame), frame, bad_label=damage == "label")
            if damage == "garbage":
                payload = b"\xff\xff\xff\xff not a protocol buffer"
            record = bytearray(encode_record(payload))
            if damage == "flip":
                record[40] ^= 0xFF
            if damage == "truncate":
                record = record[: len(record) // 2]
            data += record
        (folder / f"{file}.tfrecord").write_bytes(bytes(data))
    with open(root / "vocabulary.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Index", "TrainVideoCount", "KnowledgeGraphId", "Name", "WikiUrl", "Vertical1", "WikiDescription"])
        for i in range(NUM_CLASSES):
            w.writerow([i, 1000 - i % 1000, f"/m/{i:05x}", f"Class {i}", "", "Arts", f"About class {i}, with a comma"])
    return root


LAYOUTS = {"video": lambda root: write(root, frame=False), "frame": lambda root: write(root, frame=True)}
LAYOUT_ARGS = {"video": ["--level", "video"], "frame": ["--level", "frame"]}

# the loader conformance suite: loader keyword arguments; outputs compared exactly unless listed with a tolerance
LOADER = {"kwargs": {"level": "video"}, "tolerance": {}}
