"""COCO (2014/2017) -> shuffled WebDataset shards with every annotation beside its image, and a Parquet side table.

One sample per image: `jpg`, `json` (the image record, all its annotations with every field, RLE masks included,
and its captions) and, where the split has instances, numeric fields in the layouts DALI's operators take
(`boxes`, `labels` contiguous over the used categories, `iscrowd`, `area`, `polygons` + `vertices`, and
`keypoints` where the split has person keypoints). The JSONs are streamed once per job (ijson) into buckets by
image id beside the output (pipelines/coco/staging.py), so only small references cross Beam; zips are read in
place. Bad annotation rows are quarantined one by one, the image is kept.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from pipelines.coco.annotations import JsonError, iter_items
from pipelines.coco.layout import JsonUnit, LayoutError, detect_layout, list_images, open_json
from pipelines.coco.samples import CocoConfig, encode_sample, fields_for
from pipelines.coco.staging import BUCKETS, assemble_bucket, stage_json
from pipelines.common.options import base_parser, beam_pipeline_options, job_options, split_argv, use_storage_options
from pipelines.common.records import Pointer
from pipelines.common.watch import refuse_watch
from shards import storage
from shards.keys import validate_key

__all__ = ["main", "join_file"]


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
        yield _error(stem, "json", f"image {records[0]['id']} ({name}) is listed in the JSON but has no file", "list",
                     name)  # fmt: skip


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


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    ours, beam_args = split_argv(list(sys.argv[1:] if argv is None else argv))
    p = base_parser("python -m pipelines coco", __doc__.split("\n")[0], splits="train,validation", layouts=LAYOUTS_HELP)
    p.add_argument("--year", choices=["2014", "2017"], help="release (default: the newest found)")
    p.add_argument("--drop-empty", action="store_true", help="leave out images with no annotation (a filter)")
    p.add_argument("--resize-max-side", type=int, help="shrink images whose longer side is larger (re-encodes)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="quality of re-encoded JPEGs (default 95)")
    refuse_watch(p, "COCO's annotations come in one JSON per split, rewritten as a whole; re-run the batch job")
    args = p.parse_args(ours)
    job = job_options(args, beam_args)
    try:
        layout = detect_layout(job.input, job.splits, args.year, required=job.splits_given)
        job = job.present(layout.images)
        with_categories = [u for s in job.splits for u in layout.jsons[s] if u.kind in ("instances", "image_info")]
        categories = read_categories(with_categories[0])
    except (LayoutError, JsonError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    labels = {int(c["id"]): i for i, c in enumerate(categories)}
    split_urls = {s: f"{job.output}/{s}" for s in job.splits}
    import apache_beam as beam

    from pipelines.common.progress import run_and_report
    from pipelines.common.sharding import BatchPointers, SplitPlan, WriteSplit

    pipeline = beam.Pipeline(options=beam_pipeline_options(beam_args))
    for split in job.splits:
        fields = fields_for({u.kind for u in layout.jsons[split]})
        cfg = CocoConfig(labels=labels, fields=tuple(fields), keep_empty=not args.drop_empty,
                         resize_max_side=args.resize_max_side, jpeg_quality=args.jpeg_quality)  # fmt: skip
        plan = SplitPlan.for_job(
            job, split, dataset="coco", fields=fields, classes=[c["name"] for c in categories],
            source={"url": job.input, "layout": f"coco{layout.year}"}, params=cfg.params(), benign_stages=("filter",),
            side_table="pipelines.coco.samples:side_table",
            extra={"category_ids": [int(c["id"]) for c in categories], "year": layout.year,
                   "annotations": sorted({u.kind for u in layout.jsons[split]}),
                   "supercategories": [c.get("supercategory") for c in categories]},
        )  # fmt: skip
        staging = storage.join(job.output, "_staging", f"coco-{split}")
        units = list(enumerate(layout.jsons[split]))
        staged = (
            pipeline
            | f"JSONs {split}" >> beam.Create(units)
            | f"Stage {split}" >> beam.FlatMap(lambda iu, st=staging: stage_json(iu[1], iu[0], st, job.storage_options))
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

        def listed(unit: tuple[str, str]) -> Iterator[tuple[str, dict]]:
            use_storage_options(job.storage_options)
            yield from list_images(*unit)

        files = (
            pipeline
            | f"Image units {split}" >> beam.Create(layout.images[split])
            | f"List {split}" >> beam.FlatMap(listed)
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
            | f"Write {split}" >> WriteSplit(plan, functools.partial(encode_sample, cfg=cfg))
        )
    status = run_and_report(pipeline, "coco", split_urls, progress=job.progress)
    # the staged records are the job's scratch (pointers read them while shards are written): gone once it ends
    for split in job.splits:
        storage.remove_tree(storage.join(job.output, "_staging", f"coco-{split}"))
    if storage.is_local(job.output):
        with contextlib.suppress(OSError):  # only if nothing else staged there (Open Images' tars are reused)
            os.rmdir(storage.local_path(storage.join(job.output, "_staging")))
    return status
