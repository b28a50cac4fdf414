"""Command-line options every conversion job shares, and the Beam options they run under."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
from typing import Any

from pipelines.common.downloads import Dataset
from shards import storage
from shards.units import parse_size

__all__ = [
    "JobOptions",
    "base_parser",
    "beam_pipeline_options",
    "check_stores",
    "expand_option_files",
    "glob_root",
    "is_local_runner",
    "job_options",
    "parse_storage_options",
    "read_option_file",
    "split_argv",
    "use_storage_options",
]


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
    # --storage-options: travels to the workers with the pipeline (a cluster's workers do not share the
    # launcher's environment); repr=False keeps credentials out of logs and error messages
    storage_options: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict, repr=False)
    splits_given: bool = True  # False: --splits was not given, and the job converts the default splits it finds

    def present(self, found: Any) -> JobOptions:
        """With --splits not given, the splits of the default list the input has (found: those the layout has);
        a split asked for by name that is not there stays, for the layout's own error."""
        if self.splits_given:
            return self
        have = tuple(s for s in self.splits if s in found)
        return dataclasses.replace(self, splits=have) if have else self

    def params(self) -> dict[str, Any]:
        """The options that change the output bytes (recorded in the manifest; resume compares them)."""
        return {"shard_size": self.shard_size, "min_shards": self.min_shards, "seed": self.seed}


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our options before `--`, Beam's after it (passed to PipelineOptions untouched, except that an `@FILE`
    argument is replaced by the options in that file: the runner presets in infra/runners/)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], expand_option_files(argv[i + 1 :])
    return argv, []


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def read_option_file(path: str) -> list[str]:
    """Options from a preset file: one per line, `#` comments, `${NAME}` / `${NAME:-default}` from the
    environment. A variable with no value and no default is an error naming the file, line and variable."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.split(" #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue

            def value(m: re.Match, n: int = n) -> str:
                v = os.environ.get(m.group(1)) or m.group(2)
                if v is None:
                    raise SystemExit(f"error: {path}:{n}: set ${m.group(1)} (or give it a default: ${{NAME:-value}})")
                return v

            out.append(_VAR.sub(value, line))
    return out


def expand_option_files(args: list[str]) -> list[str]:
    out: list[str] = []
    for a in args:
        out += read_option_file(a[1:]) if a.startswith("@") else [a]
    return out


def is_local_runner(beam_args: list[str]) -> bool:
    """No runner named, or Beam's local runner in one process: the job then writes shards with one process
    per core. Anywhere else (a cluster, the multi-process local mode) Beam's workers give the parallelism."""
    runners = [a.split("=", 1)[1] for a in beam_args if a.startswith("--runner=")]
    if "--direct_running_mode=multi_processing" in beam_args:
        return False
    return not runners or runners[-1] in ("DirectRunner", "FnApiRunner")


def size_arg(text: str) -> int:
    """argparse type of a size ('256MB', '1GiB', 4096): a one-line usage error for anything else, or <= 0."""
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def count_arg(text: str, least: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {value}")
    return value


def fraction_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction from 0 to 1")
    return value


def base_parser(
    prog: str, description: str, *, splits: str, layouts: str = "", download: Dataset | None = None
) -> argparse.ArgumentParser:
    """The options every job has; `layouts` (the input layouts the job reads) opens the help's epilog, and where
    the data is published (`download`, a `pipelines.common.downloads.Dataset`) follows."""
    from pipelines.fetch import where_to_get
    from shards.cli import OneLineParser

    name = prog.rsplit(" ", 1)[-1]
    p = OneLineParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(f"input layouts:\n{layouts}\n\n" if layouts else "")
        + (f"{where_to_get(name, download)}\n\n" if download is not None else "")
        + "Everything after `--` goes to Beam, e.g. `-- --runner=PortableRunner --job_endpoint=...`.\n"
        "With no runner named, the job runs on Beam's local runner on all cores, with no network.",
    )
    p.add_argument("--input", required=True, help="dataset as downloaded: a local path or any fsspec URL")
    p.add_argument("--output", required=True, help="root URL; each split goes to <output>/<split>/")
    p.add_argument("--splits", help=f"comma-separated (default: those of {splits} the input has)")
    p.set_defaults(default_splits=splits)
    p.add_argument("--shard-size", default="256MB", type=size_arg, help="target bytes per shard (default 256MB)")
    p.add_argument(
        "--min-shards", type=count_arg, default=64, help="never fewer shards, if samples allow (default %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the global shuffle (default 0)")
    p.add_argument(
        "--max-bad-fraction",
        type=fraction_arg,
        default=0.001,
        help="fail the job when a larger fraction of a split's inputs is quarantined (default 0.001)",
    )
    p.add_argument("--storage-options", metavar="JSON", help="fsspec options per protocol, e.g. '{\"s3\": {...}}'")
    p.add_argument("--no-progress", action="store_true", help="no live progress line")
    p.add_argument("--verbose", action="store_true", help="on a failed check, the full traceback too")
    p.add_argument(
        "--writer-processes",
        type=lambda text: count_arg(text, least=0),
        help="shards each Beam worker writes at once in its own processes (default: one per core on the "
        "local runner, 1 on any other runner, where Beam's workers give the parallelism)",
    )
    return p


def use_storage_options(options: dict[str, dict[str, Any]]) -> None:
    """Apply --storage-options in this process; every step that touches storage calls it first, on whatever
    worker it runs."""
    for protocol, opts in options.items():
        storage.configure(protocol, **opts)


def parse_storage_options(text: str | None) -> dict[str, dict[str, Any]]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        # never echo the value: it usually holds credentials
        raise _usage_error("--storage-options must be a JSON object keyed by protocol, e.g. '{\"s3\": {...}}'")
    return value


def _usage_error(message: str) -> SystemExit:
    """One line on stderr and exit status 2, as every command here answers bad usage."""
    import sys

    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


def check_stores(input_url: str, output_url: str, *, verbose: bool = False) -> None:
    """Before any pipeline is built: the output must not overlap the input, the input must be readable and the
    output writable (a probe file written and removed). Each failure is one line naming the URL and the cause
    (exit 2); the traceback goes to the log at debug level, and to stderr with `verbose`."""
    import uuid

    input_url = glob_root(input_url)
    where = storage.overlap(input_url, output_url)
    if where:
        raise _usage_error(
            f"--output {output_url} {where} --input {input_url}: shards and progress records would "
            "be written into the raw dataset; choose an output outside it"
        )
    try:
        if not storage.exists(input_url):
            raise FileNotFoundError("it does not exist")
        storage.listdir(input_url)
    except Exception as e:
        _log_failure("input", verbose)
        raise _usage_error(f"cannot read --input {input_url}: {_cause(e)}") from None
    probe = storage.join(output_url, f".shardkit-write-check-{uuid.uuid4().hex[:12]}")
    made = _missing_folders(output_url)  # a local output the probe creates is removed again: a job that then
    try:  # stops at a layout error leaves no empty folder behind
        storage.write_bytes(probe, b"")
        storage.remove(probe)
        for folder in made:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
    except Exception as e:
        _log_failure("output", verbose)
        raise _usage_error(f"cannot write to --output {output_url}: {_cause(e)}") from None


def glob_root(url: str) -> str:
    """The folder a glob ('data/*/*.jpg', 's3://b/x/**.png') lists below: the part before its first wildcard,
    up to the last '/' (the URL itself when it has no wildcard)."""
    cut = min((i for i in (url.find(c) for c in "*?[") if i >= 0), default=-1)
    if cut < 0:
        return url
    head = url[:cut].rsplit("/", 1)[0] if "/" in url[:cut] else ""
    return head or "."


def _missing_folders(url: str) -> list[str]:
    """The local folders (deepest first) that writing into `url` would create."""
    if not storage.is_local(url):
        return []
    out, path = [], os.path.abspath(storage.local_path(url))
    while not os.path.exists(path):
        out.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return out


def _log_failure(what: str, verbose: bool) -> None:
    import logging
    import traceback

    logging.getLogger(__name__).debug("%s check failed", what, exc_info=True)
    if verbose:
        traceback.print_exc()


def _cause(e: BaseException) -> str:
    """An exception as one short line: its type and first line, without file paths of our own code."""
    text = (str(e).strip().splitlines() or [""])[0][:300]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def job_options(args: argparse.Namespace, beam_args: list[str] = ()) -> JobOptions:
    storage_options = parse_storage_options(args.storage_options)
    use_storage_options(storage_options)  # the launcher lists and detects the layout itself
    check_stores(args.input.rstrip("/"), args.output.rstrip("/"), verbose=getattr(args, "verbose", False))
    return JobOptions(
        input=args.input.rstrip("/"),
        output=args.output.rstrip("/"),
        splits=tuple(s for s in (args.splits or args.default_splits).split(",") if s),
        splits_given=args.splits is not None,
        shard_size=args.shard_size,
        min_shards=args.min_shards,
        seed=args.seed,
        max_bad_fraction=args.max_bad_fraction,
        progress=not args.no_progress,
        writer_processes=(
            args.writer_processes
            if args.writer_processes is not None
            else (0 if is_local_runner(list(beam_args)) else 1)
        ),
        storage_options=storage_options,
    )


def beam_pipeline_options(beam_args: list[str]):
    """PipelineOptions from the args after `--`; with no runner named, Beam's local runner, in memory.

    Beam's default runner first tries to download Prism; naming the in-memory FnApiRunner avoids that attempt,
    so the default needs no network. It runs in one process; the shard writers use all cores with a process
    pool. Measured on 2 cores, that beats the multi-process mode, whose gRPC data plane costs about as much CPU
    as the work itself (README, Benchmarks).
    """
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(beam_args)
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        args.append("--default_sdk_harness_log_level=WARNING")
    if not any(a.startswith("--runner") for a in args):
        # Beam's FnApiRunner, in memory: what the DirectRunner falls back to after it first tries Prism, which
        # starts a job server (leaving an empty beam-temp* folder in the temp dir every run) and tries to
        # download the Prism binary; naming it skips both
        args.append("--runner=FnApiRunner")
    return PipelineOptions(args)
