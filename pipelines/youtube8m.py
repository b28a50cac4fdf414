"""`python -m pipelines youtube8m`: YouTube-8M features (TFRecords of tf.train.Example / SequenceExample) -> Arrow.

Input: `<split>NNNN.tfrecord` files anywhere under `--input` (splits `train`, `validate`, `test`), video level
(`id`, `labels`, `mean_rgb` 1024 floats, `mean_audio` 128 floats) or frame level (context `id`, `labels` and the
Segments fields when present; feature lists `rgb` 1024 bytes and `audio` 128 bytes per second). Read without
TensorFlow: each file is walked record by record with both CRCs checked (pipelines/common/tfrecord.py), records
become pointers (file, offset, length, keyed by the video id), the seeded shuffle spreads them over the output
shards (the input files are per-day or per-label clumps), and each writer ranged-reads and parses its records.

Output: Arrow IPC shards. Video level: `id` string, `labels` list<int32>, `mean_rgb` fixed_size_list<float>[1024],
`mean_audio` fixed_size_list<float>[128]. Frame level keeps the quantized bytes: `num_frames` int32, `rgb` binary
(num_frames x 1024 uint8), `audio` binary (num_frames x 128 uint8), `segment_*` lists (null when absent); the
loader dequantizes (`x * 4/255 + 4/512 - 2`). `--vocabulary` (vocabulary.csv, found under --input if not given)
fills `classes` with the class names in Index order.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import io
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from pipelines.common import errors
from pipelines.common.downloads import Dataset, FetchError, Remote, rebased
from pipelines.common.errors import BadInput
from pipelines.common.job import DatasetJob, Found, Run, register
from pipelines.common.plan import SplitPlan
from pipelines.common.records import Pointer
from pipelines.common.tfrecord import Example, SequenceExample, feature_values, iter_records
from shards import storage
from shards.keys import validate_key

__all__ = [
    "LayoutError",
    "WatchedRecords",
    "YouTube8M",
    "YouTube8MConfig",
    "detect_files",
    "encode_sample",
    "list_file",
    "main",
    "schema",
]

SPLITS = ("train", "validate", "test")
NUM_CLASSES = 3862
RGB, AUDIO = 1024, 128
SEGMENT_FIELDS = ("segment_labels", "segment_start_times", "segment_end_times", "segment_scores")
_FILE = re.compile(r"^(train|validate|test)\d*\.tfrecord$")


class LayoutError(errors.LayoutError):
    """No YouTube-8M TFRecords where the input points, or a requested split is missing."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class YouTube8MConfig:
    level: str  # "video" | "frame"
    num_classes: int = NUM_CLASSES

    def params(self) -> dict[str, Any]:
        return {"level": self.level, "num_classes": self.num_classes}


def schema(level: str):
    import pyarrow as pa

    common = [("id", pa.string()), ("labels", pa.list_(pa.int32()))]
    if level == "video":
        return pa.schema(
            [*common, ("mean_rgb", pa.list_(pa.float32(), RGB)), ("mean_audio", pa.list_(pa.float32(), AUDIO))]
        )
    return pa.schema(
        [
            *common,
            ("num_frames", pa.int32()),
            ("rgb", pa.binary()),
            ("audio", pa.binary()),
            ("segment_labels", pa.list_(pa.int32())),
            ("segment_start_times", pa.list_(pa.int32())),
            ("segment_end_times", pa.list_(pa.int32())),
            ("segment_scores", pa.list_(pa.float32())),
        ]
    )


def detect_files(root: str, splits: tuple[str, ...], *, required: bool = True) -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for url in storage.walk(root):
        m = _FILE.match(url.rsplit("/", 1)[-1])
        if m:
            files.setdefault(m.group(1), []).append(url)
    missing = [s for s in splits if s not in files]
    if missing and (required or len(missing) == len(splits)):
        raise LayoutError(
            f"{root}: no <split>NNNN.tfrecord files for {missing}; found {sorted(files) or 'none'} "
            "(YouTube-8M names its files train0000.tfrecord, validate0000.tfrecord, test0000.tfrecord)"
        )
    return {s: files[s] for s in splits if s in files}


def read_vocabulary(url: str) -> list[str]:
    """Class names in `Index` order from vocabulary.csv (Index,TrainVideoCount,KnowledgeGraphId,Name,...)."""
    rows = list(csv.DictReader(io.StringIO(storage.read_bytes(url).decode("utf-8"))))
    if not rows or "Index" not in rows[0] or "Name" not in rows[0]:
        raise LayoutError(f"{url}: not a YouTube-8M vocabulary (needs the columns Index and Name)")
    by_index = {int(r["Index"]): r["Name"] for r in rows}
    if sorted(by_index) != list(range(len(by_index))):
        raise LayoutError(f"{url}: Index is not 0..{len(by_index) - 1}")
    return [by_index[i] for i in range(len(by_index))]


def _parse(payload: bytes, level: str):
    """(id, message) of one record; BadInput when it is not the level's proto or has no id."""
    from google.protobuf.message import DecodeError

    try:
        msg = (Example if level == "video" else SequenceExample).FromString(payload)
    except DecodeError as e:
        raise BadInput(f"undecodable record: {e}", stage="parse") from None
    features = msg.features.feature if level == "video" else msg.context.feature
    if level == "frame" and "rgb" not in msg.feature_lists.feature_list:
        raise BadInput("not a frame-level SequenceExample (no `rgb` feature list)", stage="parse")
    if level == "video" and "mean_rgb" not in features:
        raise BadInput("not a video-level Example (no `mean_rgb`)", stage="parse")
    ids = feature_values(features["id"]) if "id" in features else []
    if len(ids) != 1:
        raise BadInput("record without a single `id`", stage="parse")
    try:
        return ids[0].decode("utf-8"), msg
    except UnicodeDecodeError:
        raise BadInput(f"id {ids[0]!r} is not UTF-8", stage="parse") from None


def detect_level(url: str) -> str:
    with storage.open_read(url, block_size=1 << 20) as f:
        for rec in iter_records(f):
            if rec.payload is None:
                continue
            with contextlib.suppress(BadInput):
                _parse(rec.payload, "frame")
                return "frame"
            with contextlib.suppress(BadInput):
                _parse(rec.payload, "video")
                return "video"
    raise LayoutError(f"{url}: no record is a YouTube-8M Example or SequenceExample; say --level")


def list_file(url: str, level: str) -> Iterator[Pointer]:
    """A pointer per record of one TFRecord file; damaged or undecodable records carry the reason."""
    stem = url.rsplit("/", 1)[-1].split(".")[0]
    with storage.open_read(url, block_size=8 << 20) as f:
        for rec in iter_records(f):
            where = {"file": url.rsplit("/", 1)[-1], "record": rec.number}
            bad_key = f"{stem}-record{rec.number:06d}"
            if rec.error:
                yield Pointer(bad_key, url, rec.offset, 0, {**where, "error": rec.error, "stage": "read"})
                continue
            try:
                key, _ = _parse(rec.payload, level)
                validate_key(key, url=url)
            except (BadInput, ValueError) as e:
                stage = getattr(e, "stage", "parse")
                yield Pointer(
                    bad_key, url, rec.offset, 0, {**where, "error": f"record {rec.number}: {e}", "stage": stage}
                )
                continue
            yield Pointer(key, url, rec.offset, rec.length, where)


def _ints(feature) -> list[int]:
    return [int(v) for v in feature_values(feature)]


def encode_sample(p: Pointer, data: bytes, *, cfg: YouTube8MConfig) -> dict[str, Any]:
    """One Arrow row from one record (the writer ranged-read its payload); a damaged record is quarantined with
    its file and record number, as the listing's entries are."""
    try:
        return _row(p, data, cfg)
    except BadInput as e:
        raise BadInput(f"{p.meta['file']} record {p.meta['record']}: {e}", stage=e.stage) from None


def _row(p: Pointer, data: bytes, cfg: YouTube8MConfig) -> dict[str, Any]:
    _, msg = _parse(data, cfg.level)
    features = msg.features.feature if cfg.level == "video" else msg.context.feature
    labels = sorted(set(_ints(features["labels"]))) if "labels" in features else []
    bad = [v for v in labels if not 0 <= v < cfg.num_classes]
    if bad:
        raise BadInput(f"labels {bad} outside the {cfg.num_classes} classes", stage="labels")
    row: dict[str, Any] = {"id": p.key, "labels": labels}
    if cfg.level == "video":
        for name, n in (("mean_rgb", RGB), ("mean_audio", AUDIO)):
            values = feature_values(features[name]) if name in features else []
            if len(values) != n:
                raise BadInput(f"`{name}` has {len(values)} values, not {n}", stage="features")
            row[name] = np.asarray(values, np.float32)
        return row
    lists = msg.feature_lists.feature_list
    frames = {}
    for name, n in (("rgb", RGB), ("audio", AUDIO)):
        per_frame = [feature_values(f) for f in lists[name].feature] if name in lists else []
        if any(len(v) != 1 or len(v[0]) != n for v in per_frame):
            raise BadInput(f"`{name}` frames are not {n} bytes each", stage="features")
        frames[name] = b"".join(v[0] for v in per_frame)
    num_frames = len(frames["rgb"]) // RGB
    if len(frames["audio"]) // AUDIO != num_frames:
        raise BadInput(f"{num_frames} rgb frames but {len(frames['audio']) // AUDIO} audio frames", stage="features")
    row.update(num_frames=num_frames, **frames)
    for name in SEGMENT_FIELDS:
        row[name] = feature_values(features[name]) if name in features else None
    if row["segment_labels"] is not None:
        row["segment_labels"] = [int(v) for v in row["segment_labels"]]
        row["segment_start_times"] = [int(v) for v in row["segment_start_times"] or []]
        row["segment_end_times"] = [int(v) for v in row["segment_end_times"] or []]
    return row


@dataclasses.dataclass(frozen=True)
class WatchedRecords:
    """New TFRecord files under --input, for --watch: each file is an input, its records its pointers."""

    root: str
    level: str

    def inputs(self, split: str) -> dict[str, tuple[int, str]]:
        found = storage.stat_files(self.root)
        return {u: s for u, s in found.items() if (m := _FILE.match(u.rsplit("/", 1)[-1])) and m.group(1) == split}

    def pointers(self, split: str, files: dict[str, int]) -> list[Pointer]:
        return [p for url in sorted(files) for p in list_file(url, self.level)]


LAYOUTS_HELP = """\
  <split>NNNN.tfrecord anywhere under --input (train0000.tfrecord, validate0000.tfrecord, test0000.tfrecord):
  video level (tf.train.Example) or frame level (SequenceExample); vocabulary.csv beside them or --vocabulary"""


@dataclasses.dataclass(frozen=True)
class Input:
    """What the job found: each split's TFRecord files, the feature level and the class names (if any)."""

    files: dict[str, list[str]]
    level: str
    classes: list[str] | None


def planned_files(partition: str, to: str, base: str | None, mirror: str, timeout: float) -> list[Remote] | None:
    """A YouTube-8M partition's files from the publisher's download plan ({file: md5}), named as its own
    download.py names them (`train` + the index of the two-letter id: `train0042.tfrecord`); None for a part
    that is not a partition (version/level/split)."""
    import json
    import urllib.error
    import urllib.request

    if partition.count("/") != 2:
        return None
    version, level, split = partition.split("/")
    plan_url = rebased(f"http://data.yt8m.org/{version}/download_plans/{level}_{split}.json", base)
    try:
        with urllib.request.urlopen(plan_url, timeout=timeout) as r:
            plan = json.loads(r.read())["files"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
        raise FetchError(f"{plan_url}: no download plan ({getattr(e, 'reason', e)})") from None
    letters = [chr(c) for c in [*range(97, 123), *range(65, 91), *range(48, 58)]]
    index = {a + b: i for i, (a, b) in enumerate((a, b) for a in letters for b in letters)}
    out = []
    for name, md5 in sorted(plan.items()):
        stem, ext = name.rsplit(".", 1)
        local = f"{level}/{stem[:-2]}{index.get(stem[-2:], 0):04d}.{ext}"
        out.append(Remote(f"http://{mirror}.data.yt8m.org/{partition}/{name}", local, f"md5:{md5}"))
    return out


_YT8M_VOCABULARY = "https://research.google.com/youtube8m/csv/2/vocabulary.csv"
DOWNLOAD = Dataset(
    "https://research.google.com/youtube8m/download.html",
    "DIR/<level>/<split>NNNN.tfrecord and DIR/vocabulary.csv",
    {"vocabulary": [Remote(_YT8M_VOCABULARY, "vocabulary.csv")]},
    ("vocabulary", "2/video/validate"),
    "parts are YouTube-8M partitions (2/video/train, 2/video/validate, 2/video/test, 2/frame/...), listed with "
    "per-file md5s by the publisher's download plans; --mirror us|eu|asia",
    planned=planned_files,
    planned_hint="a partition like 2/video/train",
)


@register
class YouTube8M(DatasetJob):
    name = "youtube8m"
    download = DOWNLOAD
    summary = __doc__.split("\n")[0]
    default_splits = "train,validate,test"
    layouts = LAYOUTS_HELP
    watch = True

    def add_options(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--level", choices=["video", "frame"], help="feature level (default: detected from the records)")
        p.add_argument("--vocabulary", help="vocabulary.csv (default: the one under --input, if any)")

    def detect(self, run: Run) -> Found:
        job, args = run.job, run.args
        try:
            files = detect_files(job.input, job.splits, required=job.splits_given)
            found = files
        except LayoutError:
            if not (args.watch and args.level):  # a watcher may start before the first file lands
                raise
            files, found = {}, None
        level = args.level or detect_level(files[job.present(files).splits[0]][0])
        vocab_url = args.vocabulary or next(
            (u for u in storage.walk(job.input) if u.rsplit("/", 1)[-1] == "vocabulary.csv"), None
        )
        return Found(Input(files, level, read_vocabulary(vocab_url) if vocab_url else None), splits=found)

    def config(self, run: Run) -> YouTube8MConfig:
        classes = run.layout.classes
        return YouTube8MConfig(level=run.layout.level, num_classes=len(classes) if classes else NUM_CLASSES)

    def watched(self, run: Run) -> WatchedRecords:
        return WatchedRecords(run.job.input, run.layout.level)

    def plan(self, run: Run, split: str) -> SplitPlan:
        from shards.arrow import schema_to_json

        cfg, level = self.config(run), run.layout.level
        return self.split_plan(
            run,
            split,
            layout=f"tfrecord-{level}",
            fields=dict(sorted(schema_to_json(schema(level)).items())),  # the manifest keeps keys sorted
            classes=run.layout.classes,
            params=cfg.params(),
            format="arrow",
            extra={"level": level, "num_classes": cfg.num_classes},
        )

    def encoder(self, run: Run, split: str) -> Callable:
        return functools.partial(encode_sample, cfg=self.config(run))

    def units(self, run: Run, split: str | None) -> list[str]:
        return run.layout.files[split]

    def lister(self, run: Run) -> Callable[[str], Iterator[Pointer]]:
        return functools.partial(list_file, level=run.layout.level)


main = YouTube8M().main
