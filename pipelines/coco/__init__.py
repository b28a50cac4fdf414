"""COCO (2014/2017) -> shuffled WebDataset shards with every annotation beside its image, and a Parquet side table.

One sample per image: `jpg`, `json` (the image record, all its annotations with every field, RLE masks included,
and its captions) and, where the split has instances, numeric fields in the layouts DALI's operators take
(`boxes`, `labels` contiguous over the used categories, `iscrowd`, `area`, `polygons` + `vertices`, and
`keypoints` where the split has person keypoints). The JSONs are streamed once per job (ijson) into buckets by
image id beside the output (pipelines/coco/staging.py), so only small references cross Beam; zips are read in
place. Bad annotation rows are quarantined one by one, the image is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

from pipelines.coco.annotations import JsonError, iter_items
from pipelines.coco.layout import JsonUnit, detect_layout, list_images, open_json
from pipelines.coco.samples import CocoConfig, encode_sample, fields_for
from pipelines.coco.staging import BUCKETS, assemble_bucket, stage_json
from pipelines.common.downloads import Dataset, files
from pipelines.common.job import DatasetJob, Found, Listed, Run, register
from pipelines.common.plan import SplitPlan
from pipelines.common.records import Pointer
from shards import storage
from shards.keys import validate_key

__all__ = ["Coco", "join_file", "main"]


def read_categories(unit: JsonUnit) -> list[dict[str, Any]]:
    with open_json(unit) as f:
        return sorted(iter_items(f, "categories", unit.source), key=lambda c: c["id"])


def _error(key: str, url: str, reason: str, stage: str, source: str) -> Pointer:
    return Pointer(key, url, 0, 0, {"error": reason, "stage": stage, "source": source})


def join_file(kv: tuple[str, dict[str, list]]) -> Iterator[Pointer]:
    """One file name's image file(s) and record -> the sample's pointer, or why there is none."""
    name, groups = kv
    files, records = list(groups["files"]), list(groups["records"])
    if not isinstance(name, str):  # a record whose file_name is not a string (no file can have it)
        for r in records:
            yield _error(
                f"img-{r.get('id')}",
                "json",
                f"image {r.get('id')}: file_name {name!r} is not a string",
                "annotations",
                "json",
            )
        return
    stem = name.rsplit(".", 1)[0]
    try:
        validate_key(stem)
    except ValueError as e:
        where = files[0]["url"] if files else "json"
        yield _error(stem.replace(".", "_").replace("/", "_") or "empty", where, str(e), "list", name)
        return
    if len(records) > 1:  # which record's boxes are this file's? ambiguous: the file and every record are held
        ids = sorted(str(r.get("id")) for r in records)
        reason = f"{name} is named by {len(records)} image records (ids {', '.join(ids)}); their annotations cannot be told apart"
        for i, r in enumerate(records):
            where = files[0]["url"] if files and i == 0 else "json"
            yield _error(stem if i == 0 else f"{stem}-img{r.get('id')}", where, reason, "annotations", name)
        for extra in files[1:]:
            yield _error(f"{stem}-copy", extra["url"], f"a second file named {name}", "list", extra["url"])
        return
    if files and records:
        f = files[0]
        source = f"{f['url']}:{f['member']}" if f.get("member") else f["url"]
        meta = {"coco": records[0], "inflate": f["inflate"], "name": name, "source": source}  # coco: staged record
        yield Pointer(stem, f["url"], f["offset"], f["length"], meta)
        for extra in files[1:]:
            yield _error(f"{stem}-copy", extra["url"], f"a second file named {name}", "list", extra["url"])
    elif files:
        f = files[0]
        yield _error(stem, f["url"], f"{name} is in no image record of the split's JSON", "list", f["url"])
    else:
        yield _error(
            stem, "json", f"image {records[0]['id']} ({name}) is listed in the JSON but has no file", "list", name
        )


def _records(item: tuple) -> Iterator[tuple[str, dict]]:
    if item[0] == "record":
        yield item[1], item[2]


def _bad_pointers(item: tuple, split: str) -> Iterator[tuple[str, Pointer]]:
    if item[0] == "bad":
        e = item[1]
        yield split, _error(e["key"], e["source"], e["reason"], "annotations", e["source"])


LAYOUTS_HELP = """\
  folders   train2017/ val2017/ test2017/ (or 2014) and annotations/{instances,person_keypoints,captions}_*.json,
            image_info_test2017.json, at any depth (TFDS's fake_examples/coco too)
  zips      train2017.zip val2017.zip test2017.zip annotations_trainval2017.zip image_info_test2017.zip, read in place"""


@dataclasses.dataclass(frozen=True)
class Input:
    """What the job found: the layout, the categories (by id) and their contiguous labels."""

    layout: Any
    categories: list[dict[str, Any]]
    labels: dict[int, int]


_COCO = "http://images.cocodataset.org/"
DOWNLOAD = Dataset(
    "https://cocodataset.org/#download",
    "train2017.zip, val2017.zip, test2017.zip, annotations_trainval2017.zip, image_info_test2017.zip in DIR "
    "(read in place)",
    {
        "train": files(_COCO + "zips/", {"train2017.zip": None}),
        "val": files(_COCO + "zips/", {"val2017.zip": None}),
        "test": files(_COCO + "zips/", {"test2017.zip": None}),
        "annotations": files(
            _COCO + "annotations/", {"annotations_trainval2017.zip": None, "image_info_test2017.zip": None}
        ),
    },
    ("annotations", "val", "train"),
    "COCO publishes no checksums: sizes are checked and sha256s recorded",
)


@register
class Coco(DatasetJob):
    name = "coco"
    download = DOWNLOAD
    summary = __doc__.split("\n")[0]
    default_splits = "train,validation"
    layouts = LAYOUTS_HELP
    watch = "COCO's annotations come in one JSON per split, rewritten as a whole; re-run the batch job"
    usage_errors = (JsonError,)

    def add_options(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--year", choices=["2014", "2017"], help="release (default: the newest found)")
        p.add_argument("--drop-empty", action="store_true", help="leave out images with no annotation (a filter)")
        p.add_argument("--resize-max-side", type=int, help="shrink images whose longer side is larger (re-encodes)")
        p.add_argument("--jpeg-quality", type=int, default=95, help="quality of re-encoded JPEGs (default 95)")

    def detect(self, run: Run) -> Found:
        job = run.job
        layout = detect_layout(job.input, job.splits, run.args.year, required=job.splits_given)
        splits = job.present(layout.images).splits
        with_categories = [u for s in splits for u in layout.jsons[s] if u.kind in ("instances", "image_info")]
        categories = read_categories(with_categories[0])
        labels = {int(c["id"]): i for i, c in enumerate(categories)}
        return Found(Input(layout, categories, labels), splits=layout.images)

    def config(self, run: Run, split: str) -> CocoConfig:
        fields = fields_for({u.kind for u in run.layout.layout.jsons[split]})
        return CocoConfig(
            labels=run.layout.labels,
            fields=tuple(fields),
            keep_empty=not run.args.drop_empty,
            resize_max_side=run.args.resize_max_side,
            jpeg_quality=run.args.jpeg_quality,
        )

    def plan(self, run: Run, split: str) -> SplitPlan:
        layout, categories = run.layout.layout, run.layout.categories
        return self.split_plan(
            run,
            split,
            layout=f"coco{layout.year}",
            fields=fields_for({u.kind for u in layout.jsons[split]}),
            classes=[c["name"] for c in categories],
            params=self.config(run, split).params(),
            benign_stages=("filter",),
            side_table="pipelines.coco.samples:side_table",
            extra={
                "category_ids": [int(c["id"]) for c in categories],
                "year": layout.year,
                "annotations": sorted({u.kind for u in layout.jsons[split]}),
                "supercategories": [c.get("supercategory") for c in categories],
            },
        )

    def encoder(self, run: Run, split: str) -> Callable:
        return functools.partial(encode_sample, cfg=self.config(run, split))

    def lister(self, run: Run) -> Callable:
        return list_images_of

    def expand(self, pipeline: Any, run: Run, plans: dict[str, Any]) -> None:
        """Per split: the JSONs staged into buckets by image id (once, by as many workers as there are JSONs),
        the buckets assembled into per-image records, joined by file name with the listed images."""
        import apache_beam as beam

        from pipelines.common.sharding import BatchPointers, WriteSplit

        job, layout, labels = run.job, run.layout.layout, run.layout.labels
        for split, plan in plans.items():
            staging = storage.join(job.output, "_staging", f"coco-{split}")
            units = list(enumerate(layout.jsons[split]))
            staged = (
                pipeline
                | f"JSONs {split}" >> beam.Create(units)
                | f"Stage {split}"
                >> beam.FlatMap(lambda iu, st=staging: stage_json(iu[1], iu[0], st, job.storage_options))
                | f"Staged {split}" >> beam.CombineGlobally(sum)
            )
            sources = [(i, u.source) for i, u in units]
            assembled = (
                pipeline
                | f"Buckets {split}" >> beam.Create(range(BUCKETS))
                | f"Assemble {split}"
                >> beam.FlatMap(
                    assemble_bucket, staging, sources, labels, job.storage_options, beam.pvalue.AsSingleton(staged)
                )
            )
            records = assembled | f"Records {split}" >> beam.FlatMap(_records)
            bad = assembled | f"Bad rows {split}" >> beam.FlatMap(_bad_pointers, split)
            files = (
                pipeline
                | f"Image units {split}" >> beam.Create(layout.images[split])
                | f"List {split}" >> beam.FlatMap(Listed(self.lister(run), job.storage_options, batch=False))
            )
            samples = (
                {"files": files, "records": records}
                | f"Join {split}" >> beam.CoGroupByKey()
                | f"Pointers {split}" >> beam.FlatMap(join_file)
                | f"Keyed {split}" >> beam.Map(lambda ptr, s=split: (s, ptr))
            )
            (
                (samples, bad)
                | f"All {split}" >> beam.Flatten()
                | f"Batch {split}" >> BatchPointers()
                | f"Write {split}" >> WriteSplit(plan, self.encoder(run, split))
            )

    def finish(self, run: Run) -> None:
        """The staged records are the job's scratch (pointers read them while shards are written): gone once
        it ends."""
        for split in run.job.splits:
            storage.remove_tree(storage.join(run.job.output, "_staging", f"coco-{split}"))
        if storage.is_local(run.job.output):
            with contextlib.suppress(OSError):  # only if nothing else staged there (Open Images' tars are reused)
                os.rmdir(storage.local_path(storage.join(run.job.output, "_staging")))


def list_images_of(unit: tuple[str, str]) -> Iterator[tuple[str, dict]]:
    return list_images(*unit)


main = Coco().main
