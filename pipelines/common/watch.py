"""`--watch`: a conversion job as a Beam streaming pipeline that publishes new generations as raw files land.

    PeriodicImpulse(every --interval, until --stop-after) -> ParDo(Watch): for each split, SplitWatcher.tick

Each tick converts at most one increment per split inside the DoFn, with the batch job's listing, pointer shuffle
and writers on a process pool (pipelines/common/increments.py). Why not a GroupByKey per increment: measured
here, Beam's local runner (FnApiRunner, `--streaming`) and the portable runner both hold every element after a
GroupByKey until the unbounded source ends, so no increment would publish before `--stop-after`; a stage fused
to the impulse runs on every tick, in real time, on every runner. Increments of one split are serial (each is a
new generation); a backlog is one increment converted with all the worker's cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Beam is imported only when the job runs, after the arguments are checked
    from pipelines.common.options import JobOptions
    from pipelines.common.rawinputs import RawInputs
    from pipelines.common.shardwriter import Encoder

__all__ = ["WatchOptions", "add_watch_options", "parse_duration", "refuse_watch", "run_watch", "watch_options"]

log = logging.getLogger(__name__)

WATCH_LOCK = "_watch_lock"  # held by the split's one watcher for as long as it runs, renewed every tick


@dataclasses.dataclass(frozen=True, kw_only=True)
class WatchOptions:
    interval: float = 60.0
    stop_after: float | None = None
    settle: float = 2.0
    stop_on_bad: bool = False
    retries: int = 3  # output-store errors tolerated in a row before the watcher stops
    retry_delay: float = 2.0  # seconds before the first retry, doubling (at most 30)


def parse_duration(text: str) -> float:
    """'90', '90s', '5m', '2h', '1d' -> seconds; ValueError naming the text otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not m:
        raise ValueError(f"{text!r} is not a duration like 90s, 5m, 2h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def add_watch_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("streaming (--watch)")
    g.add_argument(
        "--watch",
        action="store_true",
        help="run as a streaming job: convert new files as they land, "
        "each increment published as a new generation of the split",
    )
    g.add_argument("--interval", default="60s", help="how often to look for new files (default 60s)")
    g.add_argument("--stop-after", help="stop after this long (e.g. 2h; default: run until stopped)")
    g.add_argument(
        "--settle", default="2s", help="a new file must keep its size this long before it is converted (default 2s)"
    )
    g.add_argument(
        "--stop-on-bad",
        action="store_true",
        help="stop when an increment has more bad input than --max-bad-fraction (default: report it, "
        "leave it unpublished and go on)",
    )


def watch_options(args: argparse.Namespace) -> WatchOptions:
    from pipelines.common.options import _usage_error

    try:
        interval, settle = parse_duration(args.interval), parse_duration(args.settle)
        stop = parse_duration(args.stop_after) if args.stop_after else None
    except ValueError as e:
        raise _usage_error(str(e)) from None
    if interval <= 0:
        raise _usage_error("--interval must be more than 0")
    return WatchOptions(interval=interval, stop_after=stop, settle=settle, stop_on_bad=args.stop_on_bad)


class _Watch:
    """The DoFn's body, kept apart from Beam so it is built once per worker (`setup`)."""

    def __init__(self, plans: list, raw: RawInputs, encode: Encoder, opts: WatchOptions, writers: int):
        self.plans, self.raw, self.encode, self.opts, self.writers = plans, raw, encode, opts, writers

    def setup(self) -> None:
        import concurrent.futures as cf
        import os

        from pipelines.common.increments import SplitWatcher
        from pipelines.common.options import use_storage_options
        from pipelines.common.sharding import writer_context
        from pipelines.common.shardwriter import die_with_job

        use_storage_options(self.plans[0].storage_options)
        fn = getattr(self.encode, "func", self.encode)
        self.pool = cf.ProcessPoolExecutor(
            max_workers=self.writers,
            mp_context=writer_context(fn.__module__),
            initializer=die_with_job,
            initargs=(os.getpid(),),
        )
        self.watchers = [SplitWatcher(plan, self.raw, self.encode, settle=self.opts.settle) for plan in self.plans]
        self.failures = 0

    def tick(self) -> list[Any]:
        reports = []
        for w in self.watchers:
            try:
                report = w.tick(self.pool.submit)
                self.failures = 0
            except OSError as e:  # the output store: retry on the next ticks, then stop; the intent stays
                self.failures += 1
                print(
                    f"[{w.plan.dataset} {w.plan.split}] store error ({self.failures} of {self.opts.retries}): "
                    f"{type(e).__name__}: {e}",
                    file=sys.stderr,
                    flush=True,
                )
                if self.failures >= self.opts.retries:
                    raise RuntimeError(
                        f"{w.plan.split_url}: the store failed {self.failures} times in a row ({e}); stopping. "
                        "Nothing half-published: a restart finishes the pending increment"
                    ) from None
                time.sleep(min(30.0, self.opts.retry_delay * 2 ** (self.failures - 1)))
                continue
            if report.generation is not None or report.rejected or report.unstable:
                print(report.line(w.plan.dataset), flush=True)
            if report.rejected and self.opts.stop_on_bad:
                raise RuntimeError(f"{w.plan.split_url}: {report.rejected} (--stop-on-bad)")
            reports.append(report)
        self.renew()
        return reports

    def renew(self) -> None:
        """Say, in each split's watch lock, that this watcher is alive (a watcher on another host whose lock is
        not renewed for a while is taken over)."""
        import contextlib

        from shards.generations import renew_lock

        for plan in self.plans:
            with contextlib.suppress(OSError, ValueError):
                renew_lock(plan.split_url, WATCH_LOCK)

    def teardown(self, abort: bool = False) -> None:
        """Wait for the writers; on a stop request, end them instead (within a second): a shard they were
        writing is a temporary the next run removes, and the pending increment is finished by the next run."""
        pool = getattr(self, "pool", None)
        if pool is None:
            return
        if not abort:
            pool.shutdown(wait=True)
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(5)


def run_watch(
    job: JobOptions,
    plans: list,
    raw: RawInputs,
    encode: Encoder,
    opts: WatchOptions,
    beam_args: list[str],
    *,
    dataset: str,
) -> int:
    """Watch the splits until --stop-after or a stop request: per-increment lines on stdout, the summary at the
    end. With no runner named, the ticks run in this process (`_run_local`); with a runner, as a Beam streaming
    pipeline (`_run_beam`, with Beam counters per split)."""
    import contextlib
    import os

    from pipelines.common.increments import SplitWatcher
    from shards.errors import ShardError
    from shards.generations import LOCK_STALE, LockedError, split_lock

    try:  # an output the batch job wrote, or converted with other options: say so before Beam starts
        for plan in plans:
            SplitWatcher(plan, raw, encode)
    except (ValueError, ShardError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    writers = job.writer_processes if job.writer_processes > 0 else (os.cpu_count() or 1)
    body = _Watch(plans, raw, encode, opts, writers)
    with contextlib.ExitStack() as held:
        try:  # one watcher per split: a second one refuses in one line naming the first
            for plan in plans:
                held.enter_context(
                    split_lock(
                        plan.split_url,
                        f"a watcher of {plan.split_url}",
                        wait=0,
                        name=WATCH_LOCK,
                        stale=max(LOCK_STALE, 3 * opts.interval),
                    )
                )
        except LockedError as e:
            print(f"error: {e}; stop it first, or watch into another --output", file=sys.stderr)
            return 2
        names = ", ".join(p.split for p in plans)
        until = f" for {opts.stop_after:.0f}s" if opts.stop_after is not None else " until stopped"
        print(
            f"[{dataset}] watching {job.input} for {names} every {opts.interval:g}s{until} -> {job.output}", flush=True
        )
        start = time.time()
        if not any(a == "--runner" or a.startswith("--runner=") for a in beam_args):
            code = _run_local(body, opts, start, dataset)
        else:
            code = _run_beam(body, opts, start, dataset, beam_args)
    if code != 1:
        _summary(dataset, plans, start)
    return code


class _StopRequested(Exception):
    """SIGINT or SIGTERM arrived: the local watcher ends through its cleanup."""


def _run_local(body: _Watch, opts: WatchOptions, start: float, dataset: str) -> int:
    """The default, no runner named: the DoFn's body on a clock in this process. Beam's local runner in streaming
    mode was no fit for a service: with PeriodicImpulse its memory grew ~4.5 MB/s while idle (276 -> 627 MB in 80
    s), and Ctrl-C or SIGTERM left it waiting minutes on its state-sampler thread, then printed a traceback instead
    of the summary. Here a stop request ends it within seconds, and memory stays flat (`pipelines.bench_watch
    soak`). The body is the same one the Beam pipeline runs on a cluster's runner."""
    import math
    import signal

    stop_at = start + opts.stop_after if opts.stop_after is not None else math.inf
    stopping: list[int] = []

    def request_stop(signum, _frame):
        if not stopping:  # the first request ends the loop; later ones wait for its cleanup
            stopping.append(signum)
            raise _StopRequested

    previous = {}
    code = 0
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
        body.setup()
        next_tick = start
        while time.time() < stop_at:
            body.tick()
            next_tick = max(next_tick + opts.interval, time.time())  # a long tick is not made up for
            time.sleep(max(0.0, min(next_tick, stop_at) - time.time()))
    except _StopRequested:
        pass
    except Exception as e:  # the store failed repeatedly, --stop-on-bad, a split it cannot read
        print(f"error: the {dataset} watcher stopped: {e}", file=sys.stderr)
        code = 1
    finally:
        body.teardown(abort=bool(stopping) or code != 0)  # a later signal no longer raises
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping:
        print(f"[{dataset}] stopped by {signal.Signals(stopping[0]).name}", flush=True)
    return code


def _run_beam(body: _Watch, opts: WatchOptions, start: float, dataset: str, beam_args: list[str]) -> int:
    """A runner named after `--` (a cluster's): the body as a DoFn fused to a PeriodicImpulse."""
    import apache_beam as beam
    from apache_beam.metrics import Metrics
    from apache_beam.transforms.periodicsequence import PeriodicImpulse
    from apache_beam.utils.timestamp import MAX_TIMESTAMP

    from pipelines.common.options import beam_pipeline_options

    class Watch(beam.DoFn):
        def setup(self) -> None:
            body.setup()

        def process(self, _tick) -> Any:
            for r in body.tick():
                ns = f"{dataset}/{r.split}"
                for name, value in (
                    ("generations_published", int(r.generation is not None)),
                    ("inputs", r.inputs),
                    ("samples_written", r.samples),
                    ("quarantined", r.quarantined),
                    ("increments_rejected", int(bool(r.rejected))),
                ):
                    if value:
                        Metrics.counter(ns, name).inc(value)
                if r.latency is not None:
                    Metrics.distribution(ns, "publish_latency_ms").update(int(r.latency * 1000))
                yield dataclasses.asdict(r)

        def teardown(self) -> None:
            body.teardown()

    options = beam_pipeline_options([*beam_args, "--streaming"] if "--streaming" not in beam_args else beam_args)
    stop = start + opts.stop_after if opts.stop_after is not None else MAX_TIMESTAMP
    pipeline = beam.Pipeline(options=options)
    _ = (
        pipeline
        | "Clock" >> PeriodicImpulse(start_timestamp=start, stop_timestamp=stop, fire_interval=opts.interval)
        | "Convert increments" >> beam.ParDo(Watch())
    )
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as e:
        print(f"error: the {dataset} watcher stopped: {str(e).strip().splitlines()[-1][:500]}", file=sys.stderr)
        return 1
    return 0


def _summary(dataset: str, plans: list, since: float) -> None:
    """What this run published, from the split manifests (Beam's counters are kept too, but the local runner in
    streaming mode reported none of them for runs longer than a few ticks: measured with an 8 s run)."""
    from shards.errors import ManifestError
    from shards.manifest import read_manifest
    from shards.units import counted

    for plan in plans:
        try:
            gens = [g for g in read_manifest(plan.split_url).get("generations", []) if g["published_at"] >= since]
        except ManifestError:
            gens = []
        print(
            f"[{dataset} {plan.split}] this run: {counted(len(gens), 'generation')} published, "
            f"{counted(sum(g['inputs_seen'] for g in gens), 'input')}, "
            f"{counted(sum(g['num_samples'] for g in gens), 'sample')} written, "
            f"{sum(g['quarantine_count'] for g in gens)} quarantined",
            flush=True,
        )


def refuse_watch(p: argparse.ArgumentParser, reason: str) -> None:
    """For a dataset whose layout cannot be converted by increments: `--watch` is a one-line usage error saying
    why, not argparse's "unrecognized arguments"."""

    class Refuse(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            parser.error(f"--watch: {reason}")

    p.add_argument("--watch", nargs=0, action=Refuse, help=f"not available: {reason}")
