"""Your own data, as a user has it: a folder of photos in one folder per class (`LAYOUTS`), and the sample
functions a user writes for `pipelines.convert` / `python -m pipelines custom` (importable by the workers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infra.photos import photo_jpeg

CLASSES = ["cats", "dogs", "owls"]
EXTRA_ARGS = ["--module", "tests.raw.custom:to_sample"]


def write_folder(root: Path, n: int = 36) -> Path:
    for i in range(n):
        folder = root / CLASSES[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i:04d}.jpg").write_bytes(photo_jpeg(i, size=(96, 72)))
    (root / "dogs" / "notes.txt").write_text("not an image: to_sample refuses it")
    return root


def to_sample(path: str) -> dict:
    """A file -> {jpg, cls}: the class is the folder's name."""
    if not path.endswith(".jpg"):
        raise ValueError(f"not a JPEG: {path.rsplit('/', 1)[-1]}")
    with open(path, "rb") as f:
        return {"jpg": f.read(), "cls": CLASSES.index(Path(path).parent.name)}


def row_sample(row: tuple) -> dict:
    """A row (name, values) -> a sample with an array and its JSON; rows named 'bad*' fail in the ways the
    function of a user can."""
    name, values = row
    if name == "bad-raise":
        raise KeyError("no such record")
    if name == "bad-none":
        return None
    if name == "bad-fields":
        return {"npy": np.zeros(2), "extra": 1}
    if name == "bad-type":
        return {"npy": np.array([object()]), "json": {}}
    if name == "bad-key":
        return {"__key__": "has a space", "npy": np.zeros(2), "json": {}}
    if name == "bad-long-key":
        return {"__key__": "k" * 120, "npy": np.zeros(2), "json": {}}
    if name == "bad-nan-array":
        return {"__key__": name, "npy": np.array([1.0, np.nan], np.float32), "json": {}}
    if name == "bad-inf-json":
        return {"__key__": name, "npy": np.zeros(2), "json": {"score": float("inf")}}
    if name == "bad-generator":
        return _fails_part_way(name)
    if name.startswith("dup"):
        return {"__key__": "dup", "npy": np.zeros(2), "json": {}}
    return {"__key__": name, "npy": np.asarray(values, np.float32), "json": {"name": name, "n": len(values)}}


def _fails_part_way(name: str):
    yield {"__key__": f"{name}_0", "npy": np.zeros(2), "json": {}}
    raise OSError("the source went away")


def nan_label(n: int) -> dict:
    """A classification sample whose label is NaN for every fifth input (a float label computed from missing data)."""
    return {"__key__": f"s{n}", "cls": float("nan") if n % 5 == 0 else n % 3, "txt": f"sample {n}"}


def expand(n: int) -> list[dict]:
    """One input -> n % 3 samples (0: filtered out)."""
    return [{"__key__": f"s{n}_{j}", "txt": f"row {n}.{j}"} for j in range(n % 3)]


def arrow_row(n: int) -> dict:
    return {"id": f"r{n:03d}", "x": float(n) / 2, "tokens": list(range(n % 5))}


LAYOUTS = {"folder": write_folder}


def arrow_fixed(n: int) -> dict:
    return {"id": f"f{n:03d}", "x": float(n) / 4, "v": [n, n + 1, n + 2]}


def hangs(n: int) -> dict:
    """Input 20 never returns (a network call without a timeout, a lock never released)."""
    if n == 20:
        import time

        while True:
            time.sleep(1)
    return {"__key__": f"s{n}", "txt": f"sample {n}"}


def aborts(n: int) -> dict:
    """Input 20 takes its process down (a crash in native code)."""
    if n == 20:
        import os

        os.abort()
    return {"__key__": f"s{n}", "txt": f"sample {n}"}


def slow(n: int) -> dict:
    """A sample a few tens of milliseconds in the making (what a progress line is for)."""
    import time

    time.sleep(0.04)
    return {"__key__": f"s{n}", "txt": f"sample {n}"}


def table_row(row: dict) -> dict:
    """A row of a Parquet / Arrow table of records ({name, n, label}) -> {json, cls}; a negative n fails."""
    if row["n"] < 0:
        raise ValueError(f"n is {row['n']}")
    return {"__key__": row["name"], "json": {"name": row["name"], "n": row["n"]}, "cls": row["label"]}


def write_rows(path: Path, n: int, *, kind: str = "parquet", bad: tuple[int, ...] = ()) -> list[dict]:
    """A table of n records as a data team writes one (pandas to Parquet in row groups of 7; or an Arrow IPC file
    in record batches of 7); rows at `bad` have a negative n. Returns the rows."""
    import pandas as pd
    import pyarrow as pa

    df = pd.DataFrame(
        {"name": [f"rec{i:06d}" for i in range(n)], "n": [-1 if i in bad else i for i in range(n)],
         "label": [i % 5 for i in range(n)]}
    )  # fmt: skip
    if kind == "parquet":
        df.to_parquet(path, row_group_size=7, index=False)
    else:
        table = pa.Table.from_pandas(df, preserve_index=False)
        with pa.ipc.new_file(str(path), table.schema) as w:
            for batch in table.to_batches(max_chunksize=7):
                w.write_batch(batch)
    return df.to_dict("records")


def url_sample(url: str) -> dict:
    """A file at any URL (s3:// too) -> {jpg, cls}: the class is the folder's name."""
    from shards import storage

    return {"jpg": storage.read_bytes(url), "cls": CLASSES.index(url.rstrip("/").split("/")[-2])}
