"""`python -m pipelines custom`: your own files to shards with a function of yours (`pipelines.convert`).

    python -m pipelines custom --input 'photos/*/*.jpg' --output out --module my_pkg.samples:to_sample

The function gets each file's URL and returns a sample dict (or several): `{"jpg": bytes, "cls": 3}`.
"""

from __future__ import annotations

import importlib
import sys

from pipelines.common.options import JobOptions, base_parser, is_local_runner, parse_storage_options, split_argv
from shards import storage
from shards.units import parse_size

__all__ = ["load_function", "main"]


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


def main(argv: list[str] | None = None) -> int:
    from pipelines.conversion import convert_split

    ours, beam_args = split_argv(sys.argv[1:] if argv is None else argv)
    p = base_parser("python -m pipelines custom", __doc__.split("\n")[0], splits="train",
                    layouts="  a glob of files ('data/**/*.png', 's3://bucket/x/*.jpg'), or a folder (every file under it)")  # fmt: skip
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
    args = p.parse_args(ours)
    classes = None
    if args.classes:
        try:
            classes = [line.strip() for line in storage.read_bytes(args.classes).decode().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            p.error(f"--classes {args.classes}: {e}")
    args.splits = args.splits or args.default_splits
    if "," in args.splits:
        p.error("custom writes one split: give --splits NAME")
    try:
        fn = load_function(args.module)
    except ValueError as e:
        p.error(str(e))
    inputs = args.input
    if not any(c in inputs for c in "*?[") and storage.is_local(inputs):
        inputs = storage.walk(inputs.rstrip("/"))  # a folder: every file under it
    job = JobOptions(
        input=args.input, output=args.output.rstrip("/"), splits=(args.splits,), shard_size=parse_size(args.shard_size),
        min_shards=args.min_shards, seed=args.seed, max_bad_fraction=args.max_bad_fraction, progress=not args.no_progress,
        writer_processes=args.writer_processes if args.writer_processes is not None else int(not is_local_runner(beam_args)),
        storage_options=parse_storage_options(args.storage_options),
    )  # fmt: skip
    fields = args.fields.split(",") if args.fields else None
    return convert_split(
        p,
        job,
        beam_args,
        inputs,
        fn,
        split=args.splits,
        fields=fields,
        format=args.format,
        classes=classes,
        input_timeout=args.input_timeout,
    )
