"""`python -m pipelines.bench_convert --litdata-python PY`: `pipelines.convert` against `litdata.optimize` on the
same folder and function, in one run.

The folder: `--images` photo-like 500 x 375 JPEGs (`shards.photos`) in 10 class folders; the function
(`infra/folder_sample.py`) reads a file and names its class. Each tool converts it `--repeat` times, alternating;
figures: wall time and peak resident memory of the whole process tree (50 ms samples), medians. Start-up: on the
first 100 inputs, from launch to the first shard (ours) or chunk (LitData's) file on disk, and to the end.
Both use 2 worker processes (ours: the local runner's writer pool, one per core; LitData: num_workers=2).
LitData runs in another interpreter (`--litdata-python`: a venv with `pip install torch==2.13.0 litdata`):
installing it beside this project pulls a torchvision that does not load next to the CPU torch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

__all__ = ["main"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OURS = ("from pipelines import convert\nfrom infra.folder_sample import inputs, to_sample\n"
        "if __name__ == '__main__':\n    convert(inputs({raw!r}, {limit}), to_sample, {out!r})")  # fmt: skip
THEIRS = ("import sys\nsys.path.insert(0, {repo!r})\nfrom litdata import optimize\n"
          "from infra.folder_sample import inputs, to_sample\nif __name__ == '__main__':\n"
          "    optimize(fn=to_sample, inputs=inputs({raw!r}, {limit}), output_dir={out!r}, num_workers=2, "
          "chunk_bytes='64MB')")  # fmt: skip


def write_folder(root: str, n: int) -> None:
    from infra.folder_sample import CLASSES
    from infra.photos import photo_jpeg

    if os.path.isdir(root) and sum(len(os.listdir(os.path.join(root, c))) for c in CLASSES) == n:
        return
    shutil.rmtree(root, ignore_errors=True)
    for i in range(n):
        os.makedirs(os.path.join(root, CLASSES[i % 10]), exist_ok=True)
        with open(os.path.join(root, CLASSES[i % 10], f"img{i:05d}.jpg"), "wb") as f:
            f.write(photo_jpeg(i))


def _first_file(folder: str, suffix: str) -> bool:
    return any(f.endswith(suffix) and not f.startswith(".") for _, _, files in os.walk(folder) for f in files)


def measure(python: str, code: str, out: str, suffix: str) -> dict[str, float]:
    """Wall seconds, peak RSS of the tree, seconds to the first output file."""
    from infra.bench.job_imagenet import run_measured

    shutil.rmtree(out, ignore_errors=True)
    script = os.path.join(os.path.dirname(out), f"run-{os.path.basename(out)}.py")
    with open(script, "w") as f:
        f.write(code)
    first: list[float] = []

    def poll(elapsed: float) -> None:
        if not first and _first_file(out, suffix):
            first.append(elapsed)

    wall, peak = run_measured([python, script], cwd=REPO, poll=poll)
    return {"seconds": wall, "peak_rss_bytes": peak, "first_file_seconds": first[0] if first else wall}


def main(argv: list[str] | None = None) -> int:
    from shards.units import format_size

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["rows"]:  # the launcher's memory over a table of rows (infra/bench/job_convert_rows.py)
        from infra.bench.job_convert_rows import main as rows

        return rows(argv[1:])

    p = argparse.ArgumentParser(prog="python -m pipelines.bench_convert", description=__doc__.split("\n")[0])
    p.add_argument("--litdata-python", required=True, help="an interpreter with litdata installed")
    p.add_argument("--dir", default="bench-data/convert", help="work folder (the photos are reused)")
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json")
    args = p.parse_args(argv)
    raw = os.path.abspath(os.path.join(args.dir, "photos"))
    write_folder(raw, args.images)
    tools = {"convert": (sys.executable, OURS, ".tar"), "litdata": (args.litdata_python, THEIRS, ".bin")}
    runs: dict[str, dict[str, list[dict]]] = {"full": {k: [] for k in tools}, "100 inputs": {k: [] for k in tools}}
    for case, limit in (("full", None), ("100 inputs", 100)):
        for r in range(args.repeat):
            for name, (python, code, suffix) in tools.items():
                out = os.path.abspath(os.path.join(args.dir, f"out-{name}"))
                got = measure(python, code.format(raw=raw, out=out, limit=limit, repo=REPO), out, suffix)
                runs[case][name].append(got)
                print(f"{case} round {r + 1} {name}: {got['seconds']:.1f} s, first file {got['first_file_seconds']:.1f}"
                      f" s, peak {format_size(got['peak_rss_bytes'])}", flush=True)  # fmt: skip
    med = {case: {name: {k: statistics.median(x[k] for x in v) for k in v[0]} for name, v in c.items()}
           for case, c in runs.items()}  # fmt: skip
    full = med["full"]
    print(f"{args.images} images: convert {full['convert']['seconds']:.1f} s vs litdata {full['litdata']['seconds']:.1f}"
          f" s: {full['litdata']['seconds'] / full['convert']['seconds']:.2f}x faster (target >= 1.2); peak memory "
          f"{format_size(full['convert']['peak_rss_bytes'])} vs {format_size(full['litdata']['peak_rss_bytes'])}: "
          f"{full['convert']['peak_rss_bytes'] / full['litdata']['peak_rss_bytes']:.2f}x (target <= 0.5)")  # fmt: skip
    small = med["100 inputs"]
    print("100 inputs, launch to the first file / to the end: " + ", ".join(
        f"{k} {v['first_file_seconds']:.1f} / {v['seconds']:.1f} s" for k, v in small.items()))  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "convert-vs-litdata", "images": args.images, "cores": os.cpu_count(),
                       "runs": runs, "medians": med}, f, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
