"""`python -m pipelines.bench_coco`: the COCO job's peak memory on an instances JSON of the real size.

Writes a COCO 2017 train of `--images` tiny JPEGs (64x48: the images are not what is measured) and an
`instances_train2017.json` of `--annotations` polygon annotations (~24 vertices each, as COCO's average), laid out
as COCO publishes it; then runs the job on it and samples the resident memory of its whole process tree every
50 ms. For comparison it also measures what a plain `json.load` of the same file holds (the approach of readers
that parse the JSON per process). Defaults: COCO 2017 train's counts (118,287 images, 860,001 annotations: ~450 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

__all__ = ["main"]


def _json_load_peak(path: str) -> int:
    code = (
        f"import json, resource; json.load(open({path!r})); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) * 1024


def main(argv: list[str] | None = None) -> int:
    from infra.bench.job_imagenet import run_measured
    from infra.fake_coco import write_coco
    from shards.units import format_size

    p = argparse.ArgumentParser(prog="python -m pipelines.bench_coco", description=__doc__.split("\n")[0])
    p.add_argument("--dir", default="bench-data/coco", help="the generated COCO (reused when present)")
    p.add_argument("--out", default="bench-data/coco-out")
    p.add_argument("--images", type=int, default=118_287)
    p.add_argument("--annotations", type=int, default=860_001)
    p.add_argument("--json")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    size = write_coco(args.dir, args.images, args.annotations)
    print(f"input: {args.images} images, {args.annotations} annotations, JSON {format_size(size)} "
          f"({time.perf_counter() - t0:.0f} s to make or find)", flush=True)  # fmt: skip
    import shutil

    shutil.rmtree(args.out, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipelines", "coco", "--input", args.dir, "--output", args.out, "--splits", "train",
           "--no-progress"]  # fmt: skip
    wall, peak = run_measured(cmd)
    loaded = _json_load_peak(os.path.join(args.dir, "annotations", "instances_train2017.json"))
    print(f"job: {wall:.0f} s, peak memory of all its processes {format_size(peak)} (target <= 2 GB); a plain "
          f"json.load of the JSON alone peaks at {format_size(loaded)}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "coco-job-memory", "images": args.images, "annotations": args.annotations,
                       "json_bytes": size, "job_seconds": wall, "job_peak_rss_bytes": peak,
                       "json_load_peak_rss_bytes": loaded, "cores": os.cpu_count()}, f, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
