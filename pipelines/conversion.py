"""`convert`: any data to a verified, globally shuffled split, with one call, on any Beam runner.

    from pipelines import convert

    def to_sample(path):                      # runs on the workers, once per input
        label = path.split("/")[-2]
        return {"jpg": open(path, "rb").read(), "cls": CLASSES.index(label)}

    convert("data/*/*.jpg", to_sample, "s3://bucket/mine", split="train")

`inputs` are small references (paths, URLs, ids, row tuples), a URL glob, or a Parquet / Arrow IPC file whose
rows are the inputs; only they travel through Beam and are shuffled (seeded, the same on every run), never the
bytes. A table of rows and a glob with a wildcard folder level are listed and read on the workers
(`pipelines/common/workerinputs.py`), so the launcher holds none of them. Each shard's writer calls `fn` on its inputs, so the
bytes are made where they are written. What `fn` returns, one sample dict or an iterable of them (`__key__`
optional: one is made per input), is checked against the split's fields (given, or those of the first sample it
returns here) and encoded by extension (`pipelines/common/usersamples.py`); an exception in `fn`, a `None`, a
sample with other fields, an invalid or repeated key become quarantine entries naming the input. Shards, indexes,
manifest, quarantine, resume and byte-identical re-runs are the dataset jobs' own (`pipelines/common/sharding.py`).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import pickle
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from pipelines.common.errors import BadInput
from pipelines.common.records import Pointer
from pipelines.common.usersamples import UserEncoder, _OutOfTime, _time_limit, samples_of
from pipelines.common.workerinputs import RowTable, SplitGlob, is_row_table, numbered, offsets, split_glob
from shards import storage
from shards.units import parse_size

__all__ = ["ConvertError", "Converted", "JobFailed", "convert", "list_inputs"]

PROBE = 16  # inputs `fn` is tried on here, for the fields and the size of a sample


class ConvertError(ValueError):
    """What the user has to fix before the pipeline runs: one line naming it."""


class JobFailed(ConvertError):
    """The pipeline ran and failed (too much quarantined, a key given twice, a runner error): one line."""


@dataclasses.dataclass(frozen=True)
class Converted:
    url: str
    samples: int
    shards: int
    quarantined: int


def list_inputs(inputs: str | Iterable[Any]) -> list[Any]:
    """A URL glob (`data/*/*.jpg`, `s3://b/x/**.png`) -> the matching file URLs, sorted; anything else as a list."""
    if not isinstance(inputs, str):
        return list(inputs)
    if not any(c in inputs for c in "*?["):
        raise ConvertError(f"inputs {inputs!r} is a string without a wildcard: give a glob or a list of inputs")
    if storage.is_local(inputs):
        import glob

        return sorted(glob.glob(storage.local_path(inputs), recursive=True))
    fs, path = storage.get_fs(inputs)
    proto = storage.protocol_of(inputs)
    return sorted(f"{proto}://{p}" for p in fs.glob(path))


def _pointer(i: int, ref: Any, source: str | None = None) -> Pointer:
    """Input i as a pointer; `source` names it in quarantine entries (default: the input itself)."""
    try:
        json.dumps(ref)
        meta: dict[str, Any] = {"input": ref}
    except (TypeError, ValueError):  # travels pickled (still small)
        meta = {"input_pickle": base64.b64encode(pickle.dumps(ref, protocol=4)).decode()}
    meta["source"] = source or (ref if isinstance(ref, str) else f"input #{i}: {repr(ref)[:200]}")
    return Pointer(f"in{i:09d}", "", 0, 0, meta)


def _picklable(what: str, value: Any) -> None:
    try:
        pickle.dumps(value, protocol=4)
    except Exception as e:
        hint = " (a function defined at module level, not a lambda or a nested function)" if callable(value) else ""
        raise ConvertError(f"{what} must be picklable{hint}: {type(e).__name__}: {e}") from None


def _fn_identity(fn: Callable) -> dict[str, str]:
    """Recorded in the manifest's params: a changed function does not reuse an earlier run's shards."""
    target = getattr(fn, "func", fn)
    name = f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', type(target).__name__)}"
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        source = name
    extra = repr((getattr(fn, "args", ()), getattr(fn, "keywords", {})))  # a functools.partial's arguments
    return {"fn": name, "fn_sha256": hashlib.sha256((source + extra).encode()).hexdigest()}


def _first_failure(encoder: UserEncoder, samples: list[Any]) -> str:
    try:
        encoder._one("k", samples[0])
    except BadInput as e:
        return str(e)
    return "?"


def _probe(
    fn: Callable, refs: list[Any], fields: Any, format: str, timeout: float | None = None
) -> tuple[list[str], dict[str, str], int]:
    """fn on the first inputs (up to PROBE): the split's fields (given, or the first sample's), the manifest's
    fields (Arrow: the schema, inferred from all the samples made here), and the bytes of a sample."""
    encoder = UserEncoder(fn, (), format=format)
    errors: list[str] = []
    samples: list[Any] = []
    for i, ref in enumerate(refs[:PROBE]):
        try:
            with _time_limit(timeout):
                samples += samples_of(fn(ref))
        except _OutOfTime:
            errors.append(f"input #{i}: the function did not finish within {timeout:g}s (input_timeout)")
        except BadInput as e:
            errors.append(f"input #{i}: {e}")
        except Exception as e:
            errors.append(f"input #{i}: {type(e).__name__}: {e}")
    if not samples:
        raise ConvertError(
            f"the function made no sample from the first {min(PROBE, len(refs))} inputs"
            + (f"; first failure: {errors[0]}" if errors else "")
        )
    names = [k for k in samples[0] if k != "__key__" and not (format == "arrow" and k == "id")]
    wanted = list(fields) if fields is not None else names
    encoder.fields = tuple(wanted)
    if format == "tar":
        for sample in samples:  # the size of the first sample that encodes (a bad one is its input's quarantine)
            try:
                size = sum(len(v) for v in encoder._one("k", sample).values() if isinstance(v, bytes))
                break
            except BadInput:
                continue
        else:
            raise ConvertError(
                f"no sample of the first {min(PROBE, len(refs))} inputs encodes; first: "
                f"{_first_failure(encoder, samples)}"
            )
        return wanted, {f: "user" for f in wanted}, size
    import pyarrow as pa

    from shards.arrow import schema_from_json, schema_to_json

    if isinstance(fields, Mapping):
        schema = {"id": "string", **fields}
        schema_from_json(schema)  # a type this project cannot read back is refused now
    else:
        rows = []
        for j, sample in enumerate(samples):
            if sorted(sample) == sorted(samples[0]):
                with contextlib.suppress(BadInput):
                    rows.append(encoder._one(f"k{j}", sample))
        if not rows:
            raise ConvertError(
                f"no sample of the first {min(PROBE, len(refs))} inputs makes a row; first: "
                f"{_first_failure(encoder, samples)}"
            )
        inferred = pa.Table.from_pylist(rows).schema
        unknown = [f.name for f in inferred if "null" in str(f.type)]
        if unknown:
            raise ConvertError(
                f"cannot tell the type of column(s) {unknown} from the first {len(rows)} samples "
                "(all empty or None): give fields={column: type}"
            )
        schema = schema_to_json(inferred)
    size = pa.Table.from_pylist([encoder._one("k", samples[0])]).nbytes
    return wanted, schema, size


def convert(
    inputs: str | Iterable[Any],
    fn: Callable[[Any], Any],
    output: str,
    *,
    split: str = "train",
    fields: Sequence[str] | Mapping[str, str] | None = None,
    format: str = "tar",
    shard_size: str | int = "256MB",
    min_shards: int = 1,
    seed: int = 0,
    max_bad_fraction: float = 0.001,
    classes: Sequence[str] | None = None,
    dataset: str = "custom",
    runner_args: Sequence[str] = (),
    storage_options: dict[str, dict[str, Any]] | None = None,
    writer_processes: int | None = None,
    input_timeout: float | None = 600.0,
    progress: bool | None = None,
) -> Converted:
    """Convert `inputs` with `fn` into `<output>/<split>/` (a WebDataset tar split, or Arrow with format="arrow"),
    on Beam's local runner by default or the runner `runner_args` name. Raises ConvertError on bad arguments, on
    a function that makes nothing of the first inputs, or when the job fails (more quarantined than
    `max_bad_fraction` allows, a key given twice); returns where the split is and its counts.

    fields: the tar fields (extensions) every sample has, or for Arrow {column: type}; default: the first
    sample's. classes: label names recorded in the manifest (for `cls`). input_timeout: seconds `fn` may take on
    one input before that input is quarantined (None: no limit). progress: the jobs' live progress line on stderr
    (default: when stderr is a terminal)."""
    from pipelines.common.options import beam_pipeline_options, is_local_runner, use_storage_options

    storage_options = dict(storage_options or {})
    use_storage_options(storage_options)
    source = RowTable(inputs) if is_row_table(inputs) else split_glob(inputs) if isinstance(inputs, str) else None
    refs, count = _checked(inputs, source, fn, format, input_timeout)
    names, schema, per_sample = _probe(fn, refs, fields, format, input_timeout)
    output = output.rstrip("/")
    size = parse_size(shard_size)
    # inputs counted on the workers (a split glob): the shard count is made there, from the same estimate
    shards = max(min_shards, math.ceil(per_sample * count / size)) if count is not None else min_shards
    import apache_beam as beam

    from pipelines.common.sharding import SplitPlan, WriteSplit

    plan = SplitPlan(
        dataset=dataset,
        split=split,
        split_url=storage.join(output, split),
        fields=schema,
        classes=list(classes) if classes is not None else None,
        source={"url": str(inputs)[:300], "layout": "custom"},
        params={"shard_size": size, "min_shards": shards, "seed": seed, "format": format, **_fn_identity(fn)},
        seed=seed,
        shard_size=size,
        min_shards=shards,
        max_bad_fraction=max_bad_fraction,
        writer_processes=(0 if is_local_runner(runner_args) else 1) if writer_processes is None else writer_processes,
        storage_options=storage_options,
        format=format,
        benign_stages=("filter",),
        isolate=True,
        input_bytes=per_sample if count is None else 0,
    )
    pipeline = beam.Pipeline(options=beam_pipeline_options(list(runner_args)))
    _ = _inputs(pipeline, source, refs) | WriteSplit(
        plan,
        UserEncoder(fn, names, format=format, schema=schema if format == "arrow" else None, timeout=input_timeout),
    )
    return _run(pipeline, plan, sys.stderr.isatty() if progress is None else progress)


def _inputs(pipeline: Any, source: RowTable | SplitGlob | None, refs: list[Any]) -> Any:
    """The inputs as a PCollection of Pointers lists: made here from a list, or listed and read on the workers."""
    import apache_beam as beam

    from pipelines.common.sharding import Pointers

    if source is None:
        pointers = [_pointer(i, ref) for i, ref in enumerate(refs)]
        chunks = [Pointers(pointers[i : i + 2048]) for i in range(0, len(pointers), 2048)]
        return pipeline | "Inputs" >> beam.Create(chunks).with_output_types(Pointers)
    if isinstance(source, RowTable):
        return (
            pipeline
            | "Row groups" >> beam.Create(source.parts())
            | "Rows" >> beam.FlatMap(_rows, source).with_output_types(Pointers)
        )
    folders = pipeline | "Folders" >> beam.Create(source.folders())
    firsts = (
        folders
        | "Count" >> beam.Map(lambda d, g: (d, len(g.matches(d))), source)
        | "Counts" >> beam.combiners.ToList()
        | "Offsets" >> beam.Map(offsets)
    )
    return folders | "List" >> beam.FlatMap(_matches, source, beam.pvalue.AsSingleton(firsts)).with_output_types(
        Pointers
    )


def _rows(part: tuple[int, int, int], table: RowTable) -> Iterator[Any]:
    from pipelines.common.sharding import Pointers

    for chunk in numbered(table.rows(part[0]), part[1]):
        yield Pointers(_pointer(i, row, f"{table.url} row {i}") for i, row in chunk)


def _matches(folder: str, source: SplitGlob, firsts: dict[str, int]) -> Iterator[Any]:
    from pipelines.common.sharding import Pointers

    for chunk in numbered(source.matches(folder), firsts[folder]):
        yield Pointers(_pointer(i, url) for i, url in chunk)


def _checked(
    inputs: str | Iterable[Any],
    source: RowTable | SplitGlob | None,
    fn: Callable,
    format: str,
    input_timeout: float | None,
) -> tuple[list[Any], int | None]:
    """The arguments checked before anything runs: a ConvertError naming what is wrong. Returns the inputs
    listed here (all of them, or the first ones of inputs the workers list) and their count where it is known."""
    if format not in ("tar", "arrow"):
        raise ConvertError(f"format must be 'tar' or 'arrow', not {format!r}")
    _picklable("fn", fn)
    if input_timeout is not None and not (isinstance(input_timeout, int | float) and 0 < input_timeout < math.inf):
        raise ConvertError(f"input_timeout must be a number of seconds > 0 (or None), not {input_timeout!r}")
    if isinstance(source, RowTable):
        try:
            count = sum(n for _, _, n in source.parts())
        except FileNotFoundError:
            raise ConvertError(f"inputs {inputs!r}: no such file") from None
        except Exception as e:  # pyarrow's: not a Parquet / Arrow IPC file
            raise ConvertError(f"inputs {inputs!r} is not a readable table of rows: {e}".splitlines()[0]) from None
        refs = source.head(PROBE)
    elif isinstance(source, SplitGlob):
        refs, count = source.head(PROBE), None
    else:
        refs = list_inputs(inputs)
        count = len(refs)
    if not refs:
        raise ConvertError(f"no inputs{f' match {inputs!r}' if isinstance(inputs, str) else ''}")
    for i, ref in enumerate(refs):
        try:
            pickle.dumps(ref, protocol=4)
        except Exception as e:
            raise ConvertError(f"input #{i} ({repr(ref)[:100]}) must be picklable: {type(e).__name__}: {e}") from None
    return refs, count


def _run(pipeline: Any, plan: Any, progress: bool) -> Converted:
    """Run the pipeline (with the live progress line) and say where the split is: JobFailed in one line."""
    from pipelines.common.progress import ProgressLine, failure_line, quiet_beam
    from pipelines.common.shardwriter import PROGRESS_DIR
    from shards.manifest import read_manifest

    split_urls = {plan.split: plan.split_url}
    try:
        with (
            quiet_beam(),
            ProgressLine(plan.dataset, split_urls, PROGRESS_DIR) if progress else contextlib.nullcontext(),
        ):
            pipeline.run().wait_until_finish()
    except Exception as e:  # the runner wraps the finaliser's and the workers' errors
        raise JobFailed(failure_line(e)) from None
    m = read_manifest(plan.split_url)
    return Converted(plan.split_url, m["num_samples"], len(m["shards"]), m["quarantine"]["count"])
