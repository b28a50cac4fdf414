"""`python -m pipelines custom`: your own files to shards with a function of yours (`pipelines.convert`).

    python -m pipelines custom --input 'photos/*/*.jpg' --output out --module my_pkg.samples:to_sample

The function gets each file's URL (or each row of a Parquet / Arrow file given as --input, as a dict) and returns
a sample dict (or several): `{"jpg": bytes, "cls": 3}`.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from pipelines.common.job import ConvertJob, Run, register
from pipelines.common.options import JobOptions, job_options
from pipelines.common.workerinputs import is_row_table
from shards import storage

__all__ = ["Custom", "load_function", "main"]


def load_function(spec: str):
    """'pkg.mod:fn' or 'pkg.mod.fn' -> the function; a one-line error otherwise."""
    module, _, name = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not module or not name:
        raise ValueError(f"--module {spec!r}: give it as package.module:function")
    try:
        fn = getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise ValueError(f"--module {spec!r}: cannot import {module}: {e}") from None
    except AttributeError:
        raise ValueError(f"--module {spec!r}: {module} has no {name}") from None
    if not callable(fn):
        raise ValueError(f"--module {spec!r}: {name} is not callable")
    return fn


@register
class Custom(ConvertJob):
    name = "custom"
    summary = __doc__.split("\n")[0]
    default_splits = "train"
    layouts = (
        "  a glob of files ('data/**/*.png', 's3://bucket/x/*/*.jpg': listed on the workers folder by folder), a\n"
        "  folder (every file under it), or a Parquet / Arrow IPC file whose rows are the inputs (read on the workers)"
    )

    def add_options(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--module", required=True, help="the sample function, as package.module:function")
        p.add_argument("--format", choices=["tar", "arrow"], default="tar", help="shard format (default tar)")
        p.add_argument("--fields", help="comma-separated fields every sample has (default: the first sample's)")
        p.add_argument("--classes", help="a file of label names, one per line, recorded in the manifest (for cls)")
        p.add_argument(
            "--input-timeout",
            type=float,
            default=600.0,
            help="seconds the function may take on one input before it is quarantined (default 600)",
        )
        p.set_defaults(min_shards=1)  # as convert(): a small folder is one shard, not 64 tiny ones

    def options(self, p: argparse.ArgumentParser, args: argparse.Namespace, beam_args: list[str]) -> JobOptions:
        """The checks of this job's own options come first (no I/O but reading --classes), then the store
        checks every job makes (a glob's input is the folder before its first wildcard)."""
        args.classes_list = None
        if args.classes:
            try:
                text = storage.read_bytes(args.classes).decode()
            except (OSError, UnicodeDecodeError) as e:
                p.error(f"--classes {args.classes}: {e}")
            args.classes_list = [line.strip() for line in text.splitlines() if line.strip()]
        args.splits = args.splits or args.default_splits
        if "," in args.splits:
            p.error("custom writes one split: give --splits NAME")
        try:
            args.fn = load_function(args.module)
        except ValueError as e:
            p.error(str(e))
        return job_options(args, beam_args)

    def inputs(self, run: Run, split: str) -> tuple[Any, Callable, dict]:
        args = run.args
        inputs = args.input
        if not any(c in inputs for c in "*?[") and not is_row_table(inputs) and storage.is_local(inputs):
            inputs = storage.walk(inputs.rstrip("/"))  # a folder: every file under it
        more = {
            "fields": args.fields.split(",") if args.fields else None,
            "format": args.format,
            "classes": args.classes_list,
            "input_timeout": args.input_timeout,
        }
        return inputs, args.fn, more


main = Custom().main
