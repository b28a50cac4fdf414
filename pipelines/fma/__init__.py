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

import functools
import logging
import sys
from collections.abc import Iterator
from typing import Any

from pipelines.common.options import base_parser, beam_pipeline_options, job_options, split_argv, use_storage_options
from pipelines.common.watch import refuse_watch
from pipelines.fma.audio import FIELDS, FmaConfig, encode_sample, fields, resampled_length
from pipelines.fma.listing import (
    Labels,
    LayoutError,
    Unit,
    detect_layout,
    join_track,
    list_audio,
    read_genres,
    track_rows,
)
from pipelines.fma.metadata import SUBSETS, MetadataError, parse_genres, parse_tracks, top_level_classes
from shards import storage

__all__ = [
    "FIELDS",
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


def main(argv: list[str] | None = None) -> int:
    logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
    ours, beam_args = split_argv(list(sys.argv[1:] if argv is None else argv))
    p = base_parser(
        "python -m pipelines fma", __doc__.split("\n")[0], splits="train,validation,test", layouts=LAYOUTS_HELP
    )
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
    refuse_watch(
        p, "FMA's metadata (tracks.csv) is one file rewritten as a whole, not added to per clip; re-run the batch job"
    )
    args = p.parse_args(ours)
    job = job_options(args, beam_args)
    try:
        layout = detect_layout(job.input, args.subset)
        genres = read_genres(layout)
    except (LayoutError, MetadataError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    top = top_level_classes(genres)
    genre_ids = sorted(genres)
    labels = Labels({title: i for i, (_, title) in enumerate(top)}, {g: i for i, g in enumerate(genre_ids)})
    min_seconds = args.min_seconds if args.min_seconds is not None else (1.0 if args.subset == "full" else 20.0)
    cfg = FmaConfig(
        subset=args.subset,
        sample_rate=args.sample_rate,
        channels=args.channels,
        codec=args.codec,
        keep_original=args.keep_original,
        min_seconds=min_seconds,
        silence_dbfs=args.silence_dbfs,
    )
    split_urls = {s: storage.join(job.output, s) for s in job.splits}
    encode = functools.partial(encode_sample, cfg=cfg)

    def listed(unit: Unit) -> Iterator[tuple[str, Any]]:
        use_storage_options(job.storage_options)
        yield from list_audio(unit)

    def tracks(where: tuple[str, str | None]) -> Iterator[tuple[str, Any]]:
        use_storage_options(job.storage_options)
        yield from track_rows(where, args.subset)

    # Beam is imported only now: --help, usage errors and the store checks above answer in a second
    import apache_beam as beam

    from pipelines.common.progress import run_and_report
    from pipelines.common.sharding import BatchPointers, SplitPlan, WriteSplit

    pipeline = beam.Pipeline(options=beam_pipeline_options(beam_args))
    audio = (
        pipeline
        | "Audio units" >> beam.Create(layout.units)
        | "Spread" >> beam.Reshuffle()
        | "List audio" >> beam.FlatMap(listed)
    )
    rows = pipeline | "tracks.csv" >> beam.Create([layout.metadata]) | "Read tracks.csv" >> beam.FlatMap(tracks)
    joined = (
        (audio, rows)
        | "Both" >> beam.Flatten()
        | "Group by track" >> beam.GroupByKey()
        | "Join" >> beam.FlatMap(join_track, labels, args.subset, job.splits[0])
    )
    by_split = joined | "By split" >> beam.Partition(
        lambda kv, n: job.splits.index(kv[0]) if kv[0] in job.splits else n - 1, len(job.splits) + 1
    )
    for i, split in enumerate(job.splits):
        plan = SplitPlan.for_job(
            job,
            split,
            dataset="fma",
            fields=fields(cfg.codec, cfg.keep_original),
            classes=[title for _, title in top],
            source={"url": job.input, "layout": layout.kind},
            params=cfg.params(),
            extra={
                "subset": cfg.subset,
                "audio": {"codec": cfg.codec, "sample_rate": cfg.sample_rate, "channels": cfg.channels},
                "genres": [{"id": g, **genres[g]} for g in genre_ids],
            },
        )
        (by_split[i] | f"Batch {split}" >> BatchPointers() | f"Write {split}" >> WriteSplit(plan, encode))
    return run_and_report(pipeline, "fma", split_urls, progress=job.progress)
