"""`python -m pipelines openimages`: Open Images (V4-V7, Challenge 2019) -> detection and multi-label shards.

Inputs as distributed: images in CVDF tars (`train_0.tar.gz` ..., or uncompressed `*.tar`), Challenge-2019 zips
(`train_00.zip` ...), or per-image files in folders; the CSVs: boxes (13 columns, 21 with the XClick columns, or
the 7-column Challenge validation layout), human and machine image-level labels (4 columns, or 3 without
`Source`; TFDS's misspelled `Condidence` header is read as `Confidence`), image metadata with `Rotation`,
class descriptions (with or without a header row). The version is detected from the file names.

Annotations are grouped by ImageID in Beam and joined to pointers at the images; the shard writer ranged-reads
each image (a zip member is inflated, a `.tar.gz` is first staged as a plain tar under `<output>/_staging/`,
because gzip cannot be read at an offset). Each sample: `jpg`; `json` (everything known about the image);
`boxes` (float32 N x 4, normalized [xmin, ymin, xmax, ymax], the `ltrb` order DALI's bbox operators take);
`labels` (int32 N, index into `classes`); `imagelabels` (int32, human-verified positive labels). `Rotation` is
applied to pixels and boxes alike. A Parquet table of every box and image-level label goes next to the shards
(`<split>/annotations/shard-NNNNNN.parquet`).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Iterator
from typing import Any

from pipelines.common.options import base_parser, beam_pipeline_options, job_options, split_argv, use_storage_options
from pipelines.common.watch import refuse_watch
from pipelines.openimages.annotations import parse_csv, rotate_boxes
from pipelines.openimages.layout import (
    VERSIONS,
    LayoutError,
    Unit,
    choose_classes,
    detect_layout,
    read_class_descriptions,
    read_hierarchy,
)
from pipelines.openimages.listing import join_image, list_unit
from pipelines.openimages.samples import FIELDS, OpenImagesConfig, encode_sample, side_table
from shards import storage

__all__ = [
    "FIELDS",
    "LayoutError",
    "OpenImagesConfig",
    "detect_layout",
    "encode_sample",
    "main",
    "parse_csv",
    "read_class_descriptions",
    "rotate_boxes",
    "side_table",
]


LAYOUTS_HELP = """\
  images: CVDF tars (train_0.tar.gz ..., or .tar), Challenge-2019 zips (train_00.zip ...) or folders
  (images/train/<ImageID>.jpg); CSVs by their official names: *annotations-bbox*.csv, *human-imagelabels*.csv,
  *images-with-rotation*.csv, class-descriptions*.csv (V4-V7 and Challenge 2019)"""


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    ours, beam_args = split_argv(list(sys.argv[1:] if argv is None else argv))
    p = base_parser(
        "python -m pipelines openimages", __doc__.split("\n")[0], splits="train,validation", layouts=LAYOUTS_HELP
    )
    p.add_argument("--version", choices=VERSIONS, help="Open Images release (default: detected from file names)")
    p.add_argument("--classes", default="boxable", help="boxable | all | trainable | FILE of MIDs (default boxable)")
    p.add_argument("--resize-max-side", type=int, help="shrink images whose longer side is larger (re-encodes)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="quality of re-encoded JPEGs (default 95)")
    p.add_argument("--keep-unannotated", action="store_true", help="also write images with no box and no label")
    refuse_watch(
        p,
        "Open Images labels and boxes come in one CSV per split that is rewritten as a whole, so a new image's annotations cannot be told from a changed old one's; re-run the batch job",
    )
    args = p.parse_args(ours)
    job = job_options(args, beam_args)
    try:
        layout = detect_layout(job.input, job.splits, args.version, required=job.splits_given)
        job = job.present(layout.splits)
        classes, names = choose_classes(layout, args.classes)
        parents = read_hierarchy(layout.hierarchy_files[0]) if layout.hierarchy_files else {}
    except (LayoutError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg = OpenImagesConfig(
        classes=classes,
        names=names,
        resize_max_side=args.resize_max_side,
        jpeg_quality=args.jpeg_quality,
        keep_unannotated=args.keep_unannotated,
    )
    staging = storage.join(job.output, "_staging")
    split_urls = {s: storage.join(job.output, s) for s in job.splits}
    encode = functools.partial(encode_sample, cfg=cfg)

    def listed(unit: Unit) -> Iterator[tuple[str, Any]]:
        use_storage_options(job.storage_options)
        yield from list_unit(unit, cfg, staging, job.splits)

    # Beam is imported only now: --help, usage errors and the store checks above answer in a second
    import apache_beam as beam

    from pipelines.common.progress import run_and_report
    from pipelines.common.sharding import BatchPointers, SplitPlan, WriteSplit

    pipeline = beam.Pipeline(options=beam_pipeline_options(beam_args))
    joined = (
        pipeline
        | "Units" >> beam.Create(layout.units)
        | "Spread" >> beam.Reshuffle()
        | "List" >> beam.FlatMap(listed)
        | "Group by ImageID" >> beam.GroupByKey()
        | "Join" >> beam.FlatMap(join_image, cfg, job.splits[0])
    )
    by_split = joined | "By split" >> beam.Partition(
        lambda kv, n: job.splits.index(kv[0]) if kv[0] in job.splits else 0, len(job.splits)
    )
    for i, split in enumerate(job.splits):
        plan = SplitPlan.for_job(
            job,
            split,
            dataset="openimages",
            fields=FIELDS,
            classes=list(classes),
            source={"url": job.input, "layout": layout.version},
            params={**cfg.params(), "classes": args.classes},
            benign_stages=("filter",),
            side_table="pipelines.openimages.samples:side_table",
            extra={"class_names": [names[m] for m in classes], "class_parents": parents},
        )
        (by_split[i] | f"Batch {split}" >> BatchPointers() | f"Write {split}" >> WriteSplit(plan, encode))
    return run_and_report(pipeline, "openimages", split_urls, progress=job.progress)
