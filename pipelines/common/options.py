"""Command-line options every conversion job shares, and the Beam options they run under."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any

from shards.units import parse_size

__all__ = ["JobOptions", "base_parser", "split_argv", "job_options", "beam_pipeline_options"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobOptions:
    """What every job needs to plan shards; datasets add their own frozen config next to it."""

    input: str
    output: str
    splits: tuple[str, ...]
    shard_size: int = 256_000_000
    min_shards: int = 64
    seed: int = 0
    max_bad_fraction: float = 0.001
    progress: bool = True
    writer_processes: int = 1  # shards written at once by each Beam worker; 0: one per core

    def params(self) -> dict[str, Any]:
        """The options that change the output bytes (recorded in the manifest; resume compares them)."""
        return {"shard_size": self.shard_size, "min_shards": self.min_shards, "seed": self.seed}


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our options before `--`, Beam's after it (passed to PipelineOptions untouched)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def base_parser(prog: str, description: str, *, splits: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Everything after `--` goes to Beam, e.g. `-- --runner=PortableRunner --job_endpoint=...`. "
        "With no runner named, the job runs on Beam's local runner on all cores, with no network.",
    )
    p.add_argument("--input", required=True, help="dataset as downloaded: a local path or any fsspec URL")
    p.add_argument("--output", required=True, help="root URL; each split goes to <output>/<split>/")
    p.add_argument("--splits", default=splits, help=f"comma-separated (default {splits})")
    p.add_argument("--shard-size", default="256MB", help="target bytes per shard (default 256MB)")
    p.add_argument("--min-shards", type=int, default=64, help="never fewer shards, if samples allow (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the global shuffle (default 0)")
    p.add_argument("--max-bad-fraction", type=float, default=0.001, help="fail when more is quarantined")
    p.add_argument("--storage-options", metavar="JSON", help="fsspec options per protocol, e.g. '{\"s3\": {...}}'")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    p.add_argument(
        "--writer-processes",
        type=int,
        help="shards each Beam worker writes at once in its own processes (default: one per core on the "
        "local runner, 1 when a runner is named after --, where Beam's workers give the parallelism)",
    )
    return p


def job_options(args: argparse.Namespace, beam_args: list[str] = ()) -> JobOptions:
    if args.storage_options:
        # workers read it from the environment too (SHARDS_STORAGE_OPTIONS), whatever process they run in
        json.loads(args.storage_options)
        os.environ["SHARDS_STORAGE_OPTIONS"] = args.storage_options
    return JobOptions(
        input=args.input.rstrip("/"),
        output=args.output.rstrip("/"),
        splits=tuple(s for s in args.splits.split(",") if s),
        shard_size=parse_size(args.shard_size),
        min_shards=args.min_shards,
        seed=args.seed,
        max_bad_fraction=args.max_bad_fraction,
        progress=not args.no_progress,
        writer_processes=(
            args.writer_processes
            if args.writer_processes is not None
            else (1 if any(a.startswith("--runner") for a in beam_args) else 0)
        ),
    )


def beam_pipeline_options(beam_args: list[str]):
    """PipelineOptions from the args after `--`; with no runner named, Beam's local runner, in memory.

    Beam's default runner first tries to download Prism; naming the local runner avoids that attempt, so the
    default needs no network. In-memory mode runs in one process; the shard writers use all cores with
    threads (their work releases the GIL). Measured on 2 cores, that beats the multi-process mode, whose gRPC
    data plane costs about as much CPU as the work itself (README, Benchmarks).
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(beam_args)
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        args.append("--default_sdk_harness_log_level=WARNING")
    if not any(a.startswith("--runner") for a in args):
        args += ["--runner=DirectRunner"]
        if not any(a.startswith("--direct_running_mode") for a in args):
            args.append("--direct_running_mode=in_memory")
    return PipelineOptions(args)
