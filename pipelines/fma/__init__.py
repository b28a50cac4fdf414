"""`python -m pipelines fma`: the Free Music Archive (clips + metadata) -> WebDataset shards of FLAC or WAV.

Input as published: `fma_metadata/` (tracks.csv with its three header lines, genres.csv) and `fma_<subset>/`
(`NNN/NNNNNN.mp3`), or the official `fma_metadata.zip` and `fma_<subset>.zip`, read in place. The subsets nest
(small in medium in large; full is every track) and the split comes from tracks.csv's ('set', 'split'):
training -> `train`, validation, test.

tracks.csv is read by one Beam worker and joined by track id to the audio listed by others; each writer decodes
its tracks' MP3s (FFmpeg through PyAV: DALI cannot decode MP3), mixes to --channels, resamples to --sample-rate
(soxr) and stores 16-bit FLAC (or WAV) that DALI decodes. Each sample (key: the 6-digit track id): `flac`|`wav`,
`cls` (top-level genre, the index in `classes`; -1 where the track has several), `genres` (int32 indexes in the
manifest's `genres`, from genres_all), `json` (track, album and artist fields, license, audio facts), and `mp3`
with --keep-original. Quarantined with a reason: undecodable or empty files, clips shorter than --min-seconds,
silent clips, tracks listed in tracks.csv with no file, files with no (or another subset's) tracks.csv row.
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
from pipelines.fma.audio import FIELDS, FmaConfig, encode_sample, fields, resampled_length
from pipelines.fma.listing import (
    Labels,
    Layout,
    LayoutError,
    Unit,
    detect_layout,
    join_track,
    list_audio,
    read_genres,
    track_rows,
)
from pipelines.fma.metadata import SUBSETS, MetadataError, parse_genres, parse_tracks, top_level_classes

__all__ = [
    "FIELDS",
    "Fma",
    "FmaConfig",
    "LayoutError",
    "detect_layout",
    "encode_sample",
    "main",
    "parse_genres",
    "parse_tracks",
    "resampled_length",
]


LAYOUTS_HELP = """\
  fma_metadata/ (tracks.csv, genres.csv) and fma_<subset>/NNN/NNNNNN.mp3, or the official
  fma_metadata.zip and fma_<subset>.zip, read in place"""


@dataclasses.dataclass(frozen=True)
class Input:
    """What the job found: the layout, the genres of genres.csv, the top-level classes and the label maps."""

    layout: Layout
    genres: dict[int, dict[str, Any]]
    top: list[tuple[int, str]]
    labels: Labels


def list_unit(unit: Unit | tuple[str, tuple[str, str | None]], subset: str) -> Iterator[tuple[str, Any]]:
    """A folder or zip of MP3s -> (track id, audio); the ("tracks.csv", where) unit -> (track id, row)."""
    if isinstance(unit, Unit):
        return list_audio(unit)
    return track_rows(unit[1], subset)


_FMA = "https://os.unil.cloud.switch.ch/fma/"
DOWNLOAD = Dataset(
    "https://github.com/mdeff/fma",
    "fma_metadata.zip and fma_<subset>.zip in DIR (read in place)",
    {
        part: files(_FMA, {f"fma_{part}.zip": digest})
        for part, digest in (
            ("metadata", "sha1:f0df49ffe5f2a6008d7dc83c6915b31835dfe733"),
            ("small", "sha1:ade154f733639d52e35e32f5593efe5be76c6d70"),
            ("medium", "sha1:c67b69ea232021025fca9231fc1c7c1a063ab50b"),
            ("large", "sha1:497109f4dd721066b5ce5e5f250ec604dc78939e"),
            ("full", "sha1:0f0ace23fbe9ba30ecb7e95f763e435ea802b8ab"),
        )
    },
    ("metadata", "small"),
)


@register
class Fma(DatasetJob):
    name = "fma"
    download = DOWNLOAD
    summary = __doc__.split("\n")[0]
    default_splits = "train,validation,test"
    layouts = LAYOUTS_HELP
    watch = "FMA's metadata (tracks.csv) is one file rewritten as a whole, not added to per clip; re-run the batch job"
    usage_errors = (MetadataError,)

    def add_options(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--subset", choices=SUBSETS, default="small", help="which FMA subset (default small)")
        p.add_argument("--sample-rate", type=int, default=22050, help="Hz of the stored audio (default 22050)")
        p.add_argument("--channels", type=int, choices=[1, 2], default=1, help="1: mixed to mono (default); 2: stereo")
        p.add_argument("--codec", choices=["flac", "wav"], default="flac", help="stored audio (default flac)")
        p.add_argument("--keep-original", action="store_true", help="also store the original MP3 bytes (`mp3`)")
        p.add_argument(
            "--min-seconds",
            type=float,
            help="quarantine shorter clips (default 20 for the 30 s subsets small/medium/large, 1 for full)",
        )
        p.add_argument("--silence-dbfs", type=float, default=-60.0, help="quarantine clips whose peak is below (-60)")

    def detect(self, run: Run) -> Found:
        layout = detect_layout(run.job.input, run.args.subset)
        genres = read_genres(layout)
        top = top_level_classes(genres)
        labels = Labels({title: i for i, (_, title) in enumerate(top)}, {g: i for i, g in enumerate(sorted(genres))})
        return Found(Input(layout, genres, top, labels))

    @staticmethod
    def config(run: Run) -> FmaConfig:
        a = run.args
        min_seconds = a.min_seconds if a.min_seconds is not None else (1.0 if a.subset == "full" else 20.0)
        return FmaConfig(
            subset=a.subset,
            sample_rate=a.sample_rate,
            channels=a.channels,
            codec=a.codec,
            keep_original=a.keep_original,
            min_seconds=min_seconds,
            silence_dbfs=a.silence_dbfs,
        )

    def plan(self, run: Run, split: str) -> SplitPlan:
        cfg, found = self.config(run), run.layout
        return self.split_plan(
            run,
            split,
            layout=found.layout.kind,
            fields=fields(cfg.codec, cfg.keep_original),
            classes=[title for _, title in found.top],
            params=cfg.params(),
            extra={
                "subset": cfg.subset,
                "audio": {"codec": cfg.codec, "sample_rate": cfg.sample_rate, "channels": cfg.channels},
                "genres": [{"id": g, **found.genres[g]} for g in sorted(found.genres)],
            },
        )

    def encoder(self, run: Run, split: str) -> Callable:
        return functools.partial(encode_sample, cfg=self.config(run))

    def units(self, run: Run, split: str | None) -> list[Any]:
        return [*run.layout.layout.units, ("tracks.csv", run.layout.layout.metadata)]

    def lister(self, run: Run) -> Callable[[Any], Iterator[tuple[str, Any]]]:
        return functools.partial(list_unit, subset=run.args.subset)

    def join(self, run: Run) -> Callable[[Any], Iterator[tuple[str, Any]]]:
        return functools.partial(
            join_track, labels=run.layout.labels, subset=run.args.subset, first_split=run.job.splits[0]
        )


main = Fma().main
