"""`python -m pipelines.bench_startup`: the ImageNet job against `webdataset.ShardWriter` on the same folder, small
and large, in one run (fresh processes, alternately, from a warm page cache; medians).

Both start as a user starts them (`python -m pipelines imagenet ...`, `python -c <ShardWriter loop>`), so imports
count. The ShardWriter loop is the least a converter can do: read each file, write it into 256 MB tars; no
shuffle, no checks, no index, no manifest. Figures: job seconds / ShardWriter seconds per size (targets: <= 1.2 on
30 files, <= 1.0 at 1 GB: the job at least as fast per byte).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from infra.bench.pack import make_photo_folder, warm_page_cache
from shards.units import format_size, parse_size

__all__ = ["main"]

WDS = """
import os, sys, webdataset as wds
root, out = sys.argv[1], sys.argv[2]
classes = sorted(os.listdir(root))
os.makedirs(out, exist_ok=True)
with wds.ShardWriter(os.path.join(out, "shard-%06d.tar"), maxsize=256_000_000, verbose=0) as sink:
    for label, wnid in enumerate(classes):
        for name in sorted(os.listdir(os.path.join(root, wnid))):
            with open(os.path.join(root, wnid, name), "rb") as f:
                sink.write({"__key__": name.rsplit(".", 1)[0], "jpg": f.read(), "cls": label})
"""


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{cmd[:4]} failed: {r.stderr[-1500:]}")
    return time.perf_counter() - t0


def bench_size(raw: str, out: str, repeat: int) -> dict:
    job = [
        sys.executable,
        "-m",
        "pipelines",
        "imagenet",
        "--input",
        raw,
        "--output",
        os.path.join(out, "job"),
        "--splits",
        "train",
        "--no-progress",
    ]
    wds = [sys.executable, "-c", WDS, os.path.join(raw, "train"), os.path.join(out, "wds")]
    seconds: dict[str, list[float]] = {"job": [], "wds": []}
    warm_page_cache(os.path.join(raw, "train"))
    for _ in range(repeat):
        for name, cmd in (("job", job), ("wds", wds)):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)
            seconds[name].append(_timed(cmd))
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {"seconds": seconds, "median_seconds": med, "ratio_job_over_wds": med["job"] / med["wds"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench_startup", description=__doc__.split("\n")[0])
    p.add_argument("--dir", default="bench-data/startup", help="working folder (inputs generated or reused)")
    p.add_argument("--small", type=int, default=30, help="files of the small case (default 30)")
    p.add_argument("--large", default="1GB", help="bytes of the large case (default 1GB; 0: skip)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args(argv)
    from pipelines.imagenet import WNIDS

    r: dict = {"benchmark": "imagenet-job-startup-vs-webdataset", "cores": os.cpu_count(), "sizes": {}}
    cases = [("small", args.small * 105_000)] + (
        [("large", parse_size(args.large))] if args.large not in ("0", "") else []
    )
    for name, size in cases:
        raw = os.path.join(args.dir, f"{name}-raw")
        n, nbytes = make_photo_folder(
            os.path.join(raw, "train"), size, pattern="{cls}/{cls}_{i}.JPEG", classes=tuple(WNIDS[::50])
        )
        x = r["sizes"][name] = {
            "files": n,
            "bytes": nbytes,
            **bench_size(raw, os.path.join(args.dir, f"{name}-out"), args.repeat),
        }
        target = 1.2 if name == "small" else 1.0
        print(
            f"{name}: {n} files, {format_size(nbytes)}: job {x['median_seconds']['job']:.2f}s, ShardWriter "
            f"{x['median_seconds']['wds']:.2f}s = {x['ratio_job_over_wds']:.2f}x (target <= {target})"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
