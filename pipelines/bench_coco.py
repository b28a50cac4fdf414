"""`python -m pipelines.bench_coco`: the COCO job's peak memory on an instances JSON of the real size.

Writes a COCO 2017 train of `--images` tiny JPEGs (64x48: the images are not what is measured) and an
`instances_train2017.json` of `--annotations` polygon annotations (~24 vertices each, as COCO's average), laid out
as COCO publishes it; then runs the job on it and samples the resident memory of its whole process tree every
50 ms. For comparison it also measures what a plain `json.load` of the same file holds (the approach of readers
that parse the JSON per process). Defaults: COCO 2017 train's counts (118,287 images, 860,001 annotations: ~450 MB).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time

__all__ = ["main", "write_coco"]


def write_coco(root: str, images: int, annotations: int, seed: int = 0) -> int:
    """The layout under `root` (reused when present); returns the JSON's size in bytes."""
    import numpy as np
    from PIL import Image

    ann_dir, img_dir = os.path.join(root, "annotations"), os.path.join(root, "train2017")
    path = os.path.join(ann_dir, "instances_train2017.json")
    if os.path.exists(path):
        return os.path.getsize(path)
    os.makedirs(ann_dir, exist_ok=True)
    os.makedirs(img_dir, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    for i in range(images):
        with open(os.path.join(img_dir, f"{i + 1:012d}.jpg"), "wb") as f:
            f.write(jpeg)
    gaps = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # COCO's 80 used ids among 1..90
    categories = [{"id": i, "name": f"class {i}", "supercategory": "thing"} for i in range(1, 91) if i not in gaps]
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in categories]
    with open(path, "w") as f:
        f.write('{"info": {"year": 2017}, "licenses": [], "images": [')
        f.write(",".join(json.dumps({"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": 640, "height": 480,
                                     "license": 1, "coco_url": "", "date_captured": ""}) for i in range(images)))  # fmt: skip
        f.write('], "annotations": [')
        for a in range(annotations):
            x, y = rng.uniform(0, 500), rng.uniform(0, 380)
            poly = np.round(np.column_stack([x + rng.uniform(0, 120, 24), y + rng.uniform(0, 90, 24)]), 2).ravel()
            ann = {"id": a + 1, "image_id": int(rng.integers(1, images + 1)), "category_id": int(rng.choice(cats)),
                   "segmentation": [poly.tolist()], "area": 5000.0, "bbox": [round(x, 2), round(y, 2), 120.0, 90.0],
                   "iscrowd": 0}  # fmt: skip
            f.write(("," if a else "") + json.dumps(ann))
        f.write('], "categories": ' + json.dumps(categories) + "}")
    return os.path.getsize(path)


def _json_load_peak(path: str) -> int:
    code = (
        f"import json, resource; json.load(open({path!r})); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) * 1024


def main(argv: list[str] | None = None) -> int:
    from pipelines.bench import run_measured
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
