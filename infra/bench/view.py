"""`python -m shards.bench view`: how long `shards view` takes to build the page of 48 samples of an `s3://` split on
a loopback S3 endpoint (moto), and how much the page weighs; in the same run, the same command on a local copy of
the split and `shards preview` (a PNG grid that reads whole shards) on the same `s3://` split, as baselines.

The split is a COCO 2017 split in the official layout (`infra/fake_coco.py`: photo-like 640 x 480 JPEGs, polygon
annotations of 24 vertices) converted by the COCO job: the page draws every sample's boxes and masks. Every
command is run as a user runs it (a new process each time, imports included); the figures are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

__all__ = ["main"]


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.strip()[-2000:]}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    from infra.fake_coco import write_coco
    from infra.local_s3 import local_s3
    from shards.manifest import read_manifest

    p = argparse.ArgumentParser(prog="python -m shards.bench view", description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=2000, help="COCO images in the split (default 2000)")
    p.add_argument("-n", type=int, default=48, help="samples on the page (default 48)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-view-") as work, local_s3(buckets=("bench",)) as s3:
        env = {**os.environ, **s3}
        raw, local = os.path.join(work, "coco"), os.path.join(work, "out")
        write_coco(raw, args.images, args.images * 4, photos=True)
        job = [sys.executable, "-m", "pipelines", "coco", "--input", raw, "--splits", "train", "--no-progress"]
        t0 = time.perf_counter()
        for out in (local, "s3://bench/coco"):
            subprocess.run([*job, "--output", out], env=env, check=True, capture_output=True, timeout=1200)
        print(
            f"split: {args.images} COCO images converted, locally and to s3://bench/coco ({time.perf_counter() - t0:.0f}s)"
        )
        page = os.path.join(work, "page.html")
        view = [sys.executable, "-m", "shards", "view", "-n", str(args.n), "--out", page]
        cmds = {
            "view_s3": [*view, "s3://bench/coco/train"],
            "view_local": [*view, os.path.join(local, "train")],
            "preview_s3": [
                sys.executable,
                "-m",
                "shards",
                "preview",
                "s3://bench/coco/train",
                "-n",
                str(args.n),
                "--out",
                os.path.join(work, "preview.png"),
            ],
        }
        seconds: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.repeat):
            for k, cmd in cmds.items():
                seconds[k].append(_timed(cmd, env))
        _timed(cmds["view_s3"], env)
        weight = os.path.getsize(page)
        shards = len(read_manifest(os.path.join(local, "train"))["shards"])
    med = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "split": f"COCO train, {args.images} photo-like 640x480 JPEGs, {shards} shards",
        "samples_on_page": args.n,
        "seconds": seconds,
        "median_seconds": med,
        "page_bytes": weight,
        "targets": {"seconds": 5.0, "page_bytes": 8 << 20},
        "python": sys.version.split()[0],
    }
    for k, v in seconds.items():
        print(f"{k:>11}: median {med[k]:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in v)})")
    print(f"page: {weight / 1e6:.2f} MB for {args.n} samples (targets: <= 5 s, <= 8 MB)")
    print(
        f"view on s3 / view on local disk = {med['view_s3'] / med['view_local']:.2f}; "
        f"view / preview on s3 = {med['view_s3'] / med['preview_s3']:.2f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
