"""`python -m pipelines.bench_convert rows`: the launcher's memory when `convert` is given a Parquet file of rows
(read on the workers) against the same rows given as a list (read by the launcher), at 100 k and 1 M rows.

    python -m pipelines.bench_convert rows [--rows 1000000] [--base-rows 100000] [--json F]

The job runs on a Beam cluster on loopback (`infra/beam_local.py`: a job service and a worker pool, each its own
process), so the launcher - the process that calls `convert` - holds only what it lists and builds itself, as it
would beside Flink, Spark or Dataflow. Rows are tiny ({name, n, label}, written by pandas in row groups of 65,536)
and the split is Arrow, so the figure is about the inputs, not the bytes written. Figures: the launcher's peak
RSS (and its growth over the same process after its imports) and wall time, each run in a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

__all__ = ["main", "tiny_row"]

LAUNCHER = """
import json, os, sys, time
import pyarrow.parquet as pq
import apache_beam, pipelines.conversion
from pipelines import convert
from infra.bench.job_convert_rows import tiny_row

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def peak_rss():  # this process's own peak (getrusage's ru_maxrss also counts its parent's RSS at the fork)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

path, out, how, runner = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
before = rss()
t = time.perf_counter()
inputs = path if how == "file" else pq.read_table(path).to_pylist()
done = convert(inputs, tiny_row, out, format="arrow", runner_args=runner, min_shards=4, progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "samples": done.samples, "rss_after_imports": before,
                  "max_rss": peak_rss()}))
"""


def tiny_row(row: dict) -> dict:
    """A row {name, n, label} -> an Arrow row: its key and two numbers."""
    return {"__key__": row["name"], "x": float(row["n"]), "label": int(row["label"])}


def _write_rows(path: str, n: int) -> None:
    import pandas as pd

    df = pd.DataFrame({"name": [f"rec{i:08d}" for i in range(n)], "n": range(n), "label": [i % 1000 for i in range(n)]})
    df.to_parquet(path, row_group_size=65_536, index=False)


def _launch(path: str, out: str, how: str, runner: list[str]) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", LAUNCHER, path, out, how, json.dumps(runner)], capture_output=True, text=True
    )
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    from infra.beam_local import local_beam_cluster
    from shards.cli import OneLineParser

    p = OneLineParser(prog="python -m pipelines.bench_convert rows", description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="default 1000000")
    p.add_argument("--base-rows", type=int, default=100_000, help="the smaller run (default 100000)")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    if not 1 <= args.base_rows <= args.rows:
        p.error("give 1 <= --base-rows <= --rows")
    results: dict = {"args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="bench-rows-") as tmp, local_beam_cluster() as cluster:
        for n in (args.base_rows, args.rows):
            path = os.path.join(tmp, f"rows-{n}.parquet")
            _write_rows(path, n)
            for how in ("file", "list"):
                got = _launch(path, os.path.join(tmp, f"out-{n}-{how}"), how, cluster.args)
                results[f"{how} {n}"] = got
                if "error" in got:
                    print(f"{n:>10,} rows as a {how:4}: {got['error']}")
                    continue
                print(
                    f"{n:>10,} rows as a {how:4}: launcher peak RSS {got['max_rss'] / 1e6:7.1f} MB "
                    f"(+{(got['max_rss'] - got['rss_after_imports']) / 1e6:6.1f} MB over its imports), "
                    f"{got['seconds']:6.1f} s, {got['samples']:,} samples"
                )
    for how in ("file", "list"):
        a, b = results[f"{how} {args.base_rows}"], results[f"{how} {args.rows}"]
        if "error" not in a and "error" not in b:
            print(
                f"{how:>4}: peak RSS at {args.rows:,} rows / at {args.base_rows:,}: {b['max_rss'] / a['max_rss']:.2f}x"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
