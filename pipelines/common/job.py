"""One shape for a dataset job: a `DatasetJob` says what is its own, `DatasetJob.main` does the rest.

A dataset supplies (the spirit of TFDS's builders):

- `name`, `summary`, `default_splits`, `layouts` (the help's input layouts) and `add_options` (its own flags);
- `detect`: find the input's layout, read what the whole job needs (labels, categories, a vocabulary) and say
  which splits the input has; a `LayoutError` (or one of `usage_errors`) is the user's one-line error, exit 2;
- `plan` (the split's manifest facts: fields, classes, params) and `encoder` (pointer + bytes -> sample);
- its units and how a unit is listed (`units`, `lister`), run on the workers; with `join`, the listed items are
  grouped by key and joined into `(split, pointer)` pairs first (Open Images' CSVs, FMA's tracks.csv). A job
  whose graph is its own (COCO's staged JSON buckets) overrides `expand`;
- `watched` for `--watch` (new files as increments), or `watch` set to the reason it is refused, or `False`
  for no such option.

`main` owns argument parsing, the store checks, layout errors, `--watch` or its refusal, Beam's import (only
after the checks, so usage errors answer in a second), the progress line, the summary lines and the exit codes.
Jobs built on `pipelines.convert` (MNIST, CIFAR-10, your own files) are `ConvertJob`s: the same protocol, with
`inputs` per split instead of units and a graph.

The registry is the only list of datasets: `@register` puts a job class in `JOBS` under its name.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Collection, Iterable
from typing import Any, ClassVar

from pipelines.common.downloads import Dataset
from pipelines.common.errors import LayoutError, UsageError
from pipelines.common.options import JobOptions, base_parser, job_options, split_argv, use_storage_options
from pipelines.common.plan import SplitPlan
from pipelines.common.shardwriter import Encoder
from shards import storage

__all__ = ["JOBS", "ConvertJob", "DatasetJob", "Found", "Listed", "Run", "register"]

JOBS: dict[str, type[DatasetJob]] = {}


def register(cls: type[DatasetJob]) -> type[DatasetJob]:
    """Class decorator: the job is `python -m pipelines <cls.name>`."""
    if cls.name in JOBS and JOBS[cls.name] is not cls:
        raise ValueError(f"two dataset jobs are named {cls.name!r}: {JOBS[cls.name].__module__}, {cls.__module__}")
    JOBS[cls.name] = cls
    return cls


@dataclasses.dataclass(frozen=True)
class Found:
    """What `detect` found: the dataset's own description of the input, and the splits it has (None: the job
    cannot tell before it reads, and converts the splits asked for or the defaults)."""

    layout: Any
    splits: Collection[str] | None = None


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a job: its parsed options, the common ones, Beam's arguments and (after `detect`) the layout."""

    args: argparse.Namespace
    job: JobOptions
    beam_args: list[str]
    parser: argparse.ArgumentParser
    layout: Any = None


class Listed:
    """A unit lister on the workers: the job's --storage-options applied first, then the dataset's function.
    `batch`: the pointers of a unit as one `Pointers` element (the per-split graph), else item by item."""

    def __init__(self, fn: Callable[[Any], Iterable[Any]], storage_options: dict[str, dict[str, Any]], batch: bool):
        self.fn, self.storage_options, self.batch = fn, storage_options, batch

    def __call__(self, unit: Any) -> Any:
        use_storage_options(self.storage_options)
        if self.batch:
            from pipelines.common.sharding import Pointers

            return Pointers(self.fn(unit))
        return self.fn(unit)


class DatasetJob:
    """A conversion job; subclasses fill in what is the dataset's own (see the module's docstring)."""

    name: ClassVar[str]
    summary: ClassVar[str]  # the help's description
    default_splits: ClassVar[str]
    layouts: ClassVar[str] = ""
    watch: ClassVar[bool | str] = False  # True: --watch works (`watched`); a string: why it is refused
    usage_errors: ClassVar[tuple[type[BaseException], ...]] = ()  # more errors that mean "not this input"
    download: ClassVar[Dataset | None] = None  # where it is published: `python -m pipelines fetch`, --help

    # ------------------------------------------------------------ what a dataset supplies

    def add_options(self, p: argparse.ArgumentParser) -> None:
        """The dataset's own flags."""

    def detect(self, run: Run) -> Found:
        """Find the input's layout (a LayoutError, one line, when it is not one) and what the whole job needs."""
        raise NotImplementedError

    def watched(self, run: Run) -> Any:
        """The raw inputs as they grow, for --watch (a `pipelines.common.watch.RawInputs`)."""
        raise NotImplementedError

    def plan(self, run: Run, split: str) -> SplitPlan:
        """The split's `SplitPlan` (`SplitPlan.for_job(run.job, split, ...)`)."""
        raise NotImplementedError

    def encoder(self, run: Run, split: str) -> Encoder:
        """pointer + its bytes -> the stored sample (BadInput: the quarantine reason); runs in the writers."""
        raise NotImplementedError

    def units(self, run: Run, split: str | None) -> list[Any]:
        """The listing units of a split (or, for a job with `join`, of the whole job: split None)."""
        raise NotImplementedError

    def lister(self, run: Run) -> Callable[[Any], Iterable[Any]]:
        """unit -> its pointers (or, with `join`, its (key, item) pairs); picklable, it runs on the workers."""
        raise NotImplementedError

    join: ClassVar[Callable[..., Any] | None] = None  # (run) -> fn((key, items)) -> [(split, Pointer)]

    def finish(self, run: Run) -> None:
        """After the pipeline: remove the job's scratch."""

    def split_plan(self, run: Run, split: str, *, layout: str, **facts: Any) -> SplitPlan:
        """For `plan`: the split's plan with this job's name and input filled in; `layout`: the input layout
        found, `facts`: the rest of the manifest's facts (fields, classes, params, extra, ...)."""
        return SplitPlan.for_job(
            run.job, split, dataset=self.name, source={"url": run.job.input, "layout": layout}, **facts
        )

    # ------------------------------------------------------------ the runner

    def parser(self) -> argparse.ArgumentParser:
        from pipelines.common.watch import add_watch_options, refuse_watch

        p = base_parser(
            f"python -m pipelines {self.name}",
            self.summary,
            splits=self.default_splits,
            layouts=self.layouts,
            download=self.download,
        )
        self.add_options(p)
        if self.watch is True:
            add_watch_options(p)
        elif self.watch:
            refuse_watch(p, self.watch)
        return p

    def options(self, p: argparse.ArgumentParser, args: argparse.Namespace, beam_args: list[str]) -> JobOptions:
        """The common options checked (the stores too); a job checks its own first here, if any."""
        return job_options(args, beam_args)

    def main(self, argv: list[str] | None = None) -> int:
        """`python -m pipelines <name> [options] [-- beam options]`: the job's exit status."""
        from pipelines.common.watch import watch_options

        # worker warnings that the local runner forwards (unparseable args and the like) are noise to users
        logging.getLogger("apache_beam.runners.portability.local_job_service").setLevel(logging.ERROR)
        ours, beam_args = split_argv(list(sys.argv[1:] if argv is None else argv))
        p = self.parser()
        args = p.parse_args(ours)
        watching = watch_options(args) if self.watch is True and args.watch else None
        if watching is not None and any(a.startswith("--runner=") and "Dask" in a for a in beam_args):
            p.error(
                "--watch cannot run on Dask: the Dask runner has no unbounded sources (the watcher is a "
                "PeriodicImpulse); run --watch on the local runner or a streaming runner (Flink, Dataflow)"
            )
        run = Run(args, self.options(p, args, beam_args), beam_args, p)
        try:
            found = self.detect(run)
            job = run.job.present(found.splits) if found.splits is not None else run.job
            run = dataclasses.replace(run, job=job, layout=found.layout)
            raw = self.watched(run) if watching else None
        except UsageError as e:
            p.error(str(e))
        except (LayoutError, FileNotFoundError, *self.usage_errors) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return self.execute(run, raw, watching)

    def execute(self, run: Run, raw: Any, watching: Any) -> int:
        # Beam is imported only now: --help, usage errors and the store checks above answer in a second
        import apache_beam as beam

        from pipelines.common.options import beam_pipeline_options
        from pipelines.common.progress import run_and_report

        job = run.job
        plans = {split: self.plan(run, split) for split in job.splits}
        if raw is not None:
            from pipelines.common.watch import run_watch

            encode = self.encoder(run, job.splits[0])
            return run_watch(job, list(plans.values()), raw, encode, watching, run.beam_args, dataset=self.name)
        pipeline = beam.Pipeline(options=beam_pipeline_options(run.beam_args))
        self.expand(pipeline, run, plans)
        try:
            split_urls = {s: storage.join(job.output, s) for s in job.splits}
            return run_and_report(pipeline, self.name, split_urls, progress=job.progress)
        finally:
            self.finish(run)

    def expand(self, pipeline: Any, run: Run, plans: dict[str, SplitPlan]) -> None:
        """The Beam graph. Without `join`: per split, units -> spread over workers -> listed -> written. With
        `join`: every unit -> listed as (key, item) -> grouped by key -> joined into (split, pointer) -> by split
        -> batched -> written (items of a split not asked for are not this job's inputs)."""
        import apache_beam as beam

        from pipelines.common.sharding import BatchPointers, Pointers, WriteSplit

        job, so = run.job, run.job.storage_options
        if self.join is None:
            for split, plan in plans.items():
                (
                    pipeline
                    | f"Units {split}" >> beam.Create(self.units(run, split))
                    | f"Spread {split}" >> beam.Reshuffle()
                    | f"List {split}" >> beam.Map(Listed(self.lister(run), so, batch=True)).with_output_types(Pointers)
                    | f"Write {split}" >> WriteSplit(plan, self.encoder(run, split))
                )
            return
        splits = list(job.splits)
        joined = (
            pipeline
            | "Units" >> beam.Create(self.units(run, None))
            | "Spread" >> beam.Reshuffle()
            | "List" >> beam.FlatMap(Listed(self.lister(run), so, batch=False))
            | "Group by key" >> beam.GroupByKey()
            | "Join" >> beam.FlatMap(self.join(run))
        )
        by_split = joined | "By split" >> beam.Partition(
            lambda kv, n: splits.index(kv[0]) if kv[0] in splits else n - 1, len(splits) + 1
        )
        for i, (split, plan) in enumerate(plans.items()):
            (
                by_split[i]
                | f"Batch {split}" >> BatchPointers()
                | f"Write {split}" >> WriteSplit(plan, self.encoder(run, split))
            )


class ConvertJob(DatasetJob):
    """A job built on `pipelines.convert`: per split, `inputs` (small references) and the function that makes a
    sample of one; what is wrong with the input is a `UsageError`, raised as the split comes (a split converted
    before stays converted, as `convert` calls one by one would leave it)."""

    def detect(self, run: Run) -> Found:
        return Found(None)

    def inputs(self, run: Run, split: str) -> tuple[Any, Callable, dict[str, Any]] | None:
        """(inputs, fn, more `convert` arguments) of a split, or None: a default split the input does not have."""
        raise NotImplementedError

    def execute(self, run: Run, raw: Any, watching: Any) -> int:
        from pipelines.conversion import ConvertError, JobFailed, convert
        from shards.units import counted

        job = run.job
        for split in job.splits:
            try:
                todo = self.inputs(run, split)
                if todo is None:
                    continue
                inputs, fn, more = todo
                done = convert(
                    inputs,
                    fn,
                    job.output,
                    split=split,
                    shard_size=job.shard_size,
                    min_shards=job.min_shards,
                    seed=job.seed,
                    max_bad_fraction=job.max_bad_fraction,
                    runner_args=run.beam_args,
                    storage_options=job.storage_options,
                    writer_processes=job.writer_processes,
                    progress=job.progress,
                    dataset=self.name,
                    **more,
                )
            except JobFailed as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
            except (ConvertError, UsageError) as e:
                run.parser.error(str(e))
            print(
                f"{split}: {counted(done.samples, 'sample')} in {counted(done.shards, 'shard')}, "
                f"{done.quarantined} quarantined -> {done.url}"
            )
        return 0
