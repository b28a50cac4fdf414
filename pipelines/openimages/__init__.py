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

import argparse
import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

from pipelines.common.downloads import Dataset, files
from pipelines.common.job import DatasetJob, Found, Run, register
from pipelines.common.plan import SplitPlan
from pipelines.openimages.annotations import parse_csv, rotate_boxes
from pipelines.openimages.layout import (
    VERSIONS,
    Layout,
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
    "OpenImages",
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


@dataclasses.dataclass(frozen=True)
class Input:
    """What the job found: the layout, the config (classes chosen) and the class hierarchy."""

    layout: Layout
    cfg: OpenImagesConfig
    parents: dict[str, str]


_OI = "https://storage.googleapis.com/openimages/2018_04/"
_OI_TARS = "https://open-images-dataset.s3.amazonaws.com/tar/"
DOWNLOAD = Dataset(
    "https://storage.googleapis.com/openimages/web/download.html",
    "the CSVs and the CVDF tars (train_0..f.tar.gz, validation.tar.gz, test.tar.gz) in DIR",
    {
        "csv": files(
            _OI,
            {
                f"{s}/{s}-annotations-{k}.csv": None
                for s in ("train", "validation", "test")
                for k in ("bbox", "human-imagelabels")
            }
            | {"class-descriptions-boxable.csv": None},
        ),
        **{f"train_{c}": files(_OI_TARS, {f"train_{c}.tar.gz": None}) for c in "0123456789abcdef"},
        "validation": files(_OI_TARS, {"validation.tar.gz": None}),
        "test": files(_OI_TARS, {"test.tar.gz": None}),
    },
    ("csv", "validation"),
    "Open Images publishes no checksums: sizes are checked and sha256s recorded; parts train_0 ... train_f are "
    "~30-50 GB each",
)


@register
class OpenImages(DatasetJob):
    name = "openimages"
    download = DOWNLOAD
    summary = __doc__.split("\n")[0]
    default_splits = "train,validation"
    layouts = LAYOUTS_HELP
    watch = (
        "Open Images labels and boxes come in one CSV per split that is rewritten as a whole, so a new image's "
        "annotations cannot be told from a changed old one's; re-run the batch job"
    )

    def add_options(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--version", choices=VERSIONS, help="Open Images release (default: detected from file names)")
        p.add_argument(
            "--classes", default="boxable", help="boxable | all | trainable | FILE of MIDs (default boxable)"
        )
        p.add_argument("--resize-max-side", type=int, help="shrink images whose longer side is larger (re-encodes)")
        p.add_argument("--jpeg-quality", type=int, default=95, help="quality of re-encoded JPEGs (default 95)")
        p.add_argument("--keep-unannotated", action="store_true", help="also write images with no box and no label")

    def detect(self, run: Run) -> Found:
        a, job = run.args, run.job
        layout = detect_layout(job.input, job.splits, a.version, required=job.splits_given)
        classes, names = choose_classes(layout, a.classes)
        parents = read_hierarchy(layout.hierarchy_files[0]) if layout.hierarchy_files else {}
        cfg = OpenImagesConfig(
            classes=classes,
            names=names,
            resize_max_side=a.resize_max_side,
            jpeg_quality=a.jpeg_quality,
            keep_unannotated=a.keep_unannotated,
        )
        return Found(Input(layout, cfg, parents), splits=layout.splits)

    def plan(self, run: Run, split: str) -> SplitPlan:
        found, cfg = run.layout, run.layout.cfg
        return self.split_plan(
            run,
            split,
            layout=found.layout.version,
            fields=FIELDS,
            classes=list(cfg.classes),
            params={**cfg.params(), "classes": run.args.classes},
            benign_stages=("filter",),
            side_table="pipelines.openimages.samples:side_table",
            extra={"class_names": [cfg.names[m] for m in cfg.classes], "class_parents": found.parents},
        )

    def encoder(self, run: Run, split: str) -> Callable:
        return functools.partial(encode_sample, cfg=run.layout.cfg)

    def units(self, run: Run, split: str | None) -> list[Unit]:
        return run.layout.layout.units

    def lister(self, run: Run) -> Callable[[Unit], Iterator[tuple[str, Any]]]:
        staging = storage.join(run.job.output, "_staging")
        return functools.partial(list_unit, cfg=run.layout.cfg, staging=staging, splits=run.job.splits)

    def join(self, run: Run) -> Callable[[Any], list[tuple[str, Any]]]:
        return functools.partial(join_image, cfg=run.layout.cfg, first_split=run.job.splits[0])


main = OpenImages().main
