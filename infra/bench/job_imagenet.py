"""`python -m pipelines.bench imagenet`: the ImageNet job against `tar cf` and a plain PIL loop, in one run.

With `--targets`: the same job writing to local disk, to s3:// (the loopback endpoint of infra/local_s3.py), and
on the portable runner (infra/beam_local.py: job service + worker pool with 2 SDK workers), interleaved.
With `--runners`: the same job on the default (local) runner, the portable runner (2 SDK workers) and the Dask
runner (infra/dask_local.py) with 1 and with 2 workers, interleaved; wall time, and the start-up in it: from
launch to the first shard being written.

Repack: the job (local runner, all cores, no re-encoding) and `tar cf` of the same train/ folder, alternately,
from a warm page cache; figures are medians and their ratio. Memory: peak resident memory of the job's whole
process tree (launcher + Beam workers), sampled every 50 ms. Resize: the job with --resize-max-side 512 against a
single-process PIL loop doing the same decode + resize + encode, compared as images/s per core.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

from infra.bench.pack import make_photo_folder, warm_page_cache
from shards.procs import tree_usage
from shards.units import format_size, parse_size

__all__ = ["main", "run_measured"]


def _tree_rss(root: int) -> int:
    return tree_usage(root)[0]


def run_measured(cmd: list[str], *, cwd: str | None = None, poll=None) -> tuple[float, int]:
    """(wall seconds, peak resident bytes of the process tree) of a command; raises if it fails. `poll(elapsed)`,
    if given, is called at every 50 ms sample too."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.05):
            peak = max(peak, _tree_rss(proc.pid))
            if poll is not None:
                poll(time.perf_counter() - t0)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    t.join()
    if proc.returncode:
        raise RuntimeError(f"{cmd[:4]} failed: {err.decode()[-2000:]}")
    return wall, peak


def _job(raw: str, out: str, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "pipelines", "imagenet", "--input", raw, "--output", out, "--splits", "train"]
    return [*cmd, "--no-progress", *extra]


def bench_repack(raw: str, out: str, repeat: int) -> dict:
    warm_page_cache(raw)
    nbytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(raw) for f in fs)
    tar_out, job_out = os.path.join(out, "tar-cf.tar"), os.path.join(out, "job")
    times: dict[str, list[float]] = {"tar": [], "job": []}
    peaks: list[int] = []
    for i in range(repeat):
        for name in ("tar", "job") if i % 2 == 0 else ("job", "tar"):
            if name == "job":  # a fresh output: progress records would make a re-run a no-op
                shutil.rmtree(job_out, ignore_errors=True)
            elif os.path.exists(tar_out):
                os.unlink(tar_out)
            subprocess.run(["sync"], check=False)
            if name == "tar":
                times["tar"].append(run_measured(["tar", "cf", tar_out, "-C", raw, "train"])[0])
            else:
                wall, peak = run_measured(_job(raw, job_out))
                times["job"].append(wall)
                peaks.append(peak)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "bytes": nbytes,
        "seconds": times,
        "median_seconds": med,
        "MB_per_s": {k: nbytes / v / 1e6 for k, v in med.items()},
        "speed_ratio_job_over_tar": med["tar"] / med["job"],
        "job_peak_rss_bytes": max(peaks),
    }


def _pil_resize_loop(files: list[str], max_side: int, quality: int) -> float:
    from PIL import Image

    t0 = time.perf_counter()
    for path in files:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if max(im.size) > max_side:
                s = max_side / max(im.size)
                im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BICUBIC)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=quality)
    return time.perf_counter() - t0


def bench_resize(raw: str, out: str, count: int) -> dict:
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(raw, "train")) for f in fs)[:count]
    sub = os.path.join(out, "resize-raw")
    shutil.rmtree(sub, ignore_errors=True)
    for f in files:
        dst = os.path.join(sub, "train", os.path.basename(os.path.dirname(f)), os.path.basename(f))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.link(f, dst)
    job_out = os.path.join(out, "resize-job")
    shutil.rmtree(job_out, ignore_errors=True)
    cores = os.cpu_count() or 1
    job_wall, _ = run_measured(_job(sub, job_out, "--resize-max-side", "512"))
    pil_wall = _pil_resize_loop(files, 512, 95)
    job_rate, pil_rate = len(files) / job_wall / cores, len(files) / pil_wall
    return {
        "images": len(files),
        "cores_job": cores,
        "job_seconds": job_wall,
        "pil_loop_seconds": pil_wall,
        "job_images_per_s_per_core": job_rate,
        "pil_images_per_s_per_core": pil_rate,
        "ratio_job_over_pil_per_core": job_rate / pil_rate,
    }


def bench_targets(raw: str, out: str, repeat: int) -> dict:
    """Local runner to local disk vs to s3:// vs the portable runner to local disk, in alternating rounds.
    The endpoint and the cluster are started once, outside the timings, as a running cluster would be."""
    from infra.beam_local import local_beam_cluster
    from infra.local_s3 import local_s3
    from shards import storage

    warm_page_cache(raw)
    nbytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(raw) for f in fs)
    times: dict[str, list[float]] = {"local": [], "s3": [], "portable": []}
    local_out = os.path.join(out, "targets")
    with local_s3(buckets=("bench",)) as env, local_beam_cluster(workers=2) as cluster:
        os.environ.update(env)
        fs, _ = storage.get_fs("s3://bench/")
        runs = {
            "local": _job(raw, local_out),
            "s3": _job(raw, "s3://bench/out"),
            "portable": [*_job(raw, local_out), "--", *cluster.args],
        }
        for i in range(repeat):
            for name in list(runs) if i % 2 == 0 else list(runs)[::-1]:
                shutil.rmtree(local_out, ignore_errors=True)
                if fs.exists("bench/out"):
                    fs.rm("bench/out", recursive=True)
                subprocess.run(["sync"], check=False)
                times[name].append(run_measured(runs[name])[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "bytes": nbytes,
        "seconds": times,
        "median_seconds": med,
        "MB_per_s": {k: nbytes / v / 1e6 for k, v in med.items()},
        "speed_ratio_s3_over_local": med["local"] / med["s3"],
        "speed_ratio_portable_over_local": med["local"] / med["portable"],
    }


def bench_runners(raw: str, out: str, repeat: int) -> dict:
    """The job on each runner, to local disk, in alternating rounds; the clusters are started once, outside the
    timings, as running clusters would be. Start-up: launch to the first shard file (or its temporary) in the
    output."""
    from infra.beam_local import local_beam_cluster
    from infra.dask_local import local_dask_cluster

    warm_page_cache(raw)
    nbytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(raw) for f in fs)
    names = ("default", "portable (2 workers)", "dask (1 worker)", "dask (2 workers)")
    times: dict[str, list[float]] = {k: [] for k in names}
    starts: dict[str, list[float]] = {k: [] for k in names}
    job_out = os.path.join(out, "runners")
    train = os.path.join(job_out, "train")
    with (
        local_beam_cluster(workers=2) as portable,
        local_dask_cluster(workers=1) as d1,
        local_dask_cluster(workers=2) as d2,
    ):
        runs = {
            names[0]: _job(raw, job_out),
            names[1]: [*_job(raw, job_out), "--", *portable.args],
            names[2]: [*_job(raw, job_out), "--", *d1.args],
            names[3]: [*_job(raw, job_out), "--", *d2.args],
        }
        for i in range(repeat):
            for name in names if i % 2 == 0 else names[::-1]:
                shutil.rmtree(job_out, ignore_errors=True)
                subprocess.run(["sync"], check=False)
                first: list[float] = []

                def poll(elapsed: float, first=first) -> None:
                    if not first and os.path.isdir(train) and any("shard-" in n for n in os.listdir(train)):
                        first.append(elapsed)

                times[name].append(run_measured(runs[name], poll=poll)[0])
                starts[name].append(first[0] if first else float("nan"))
    med = {k: statistics.median(v) for k, v in times.items()}
    med_start = {k: statistics.median(v) for k, v in starts.items()}
    return {
        "bytes": nbytes,
        "seconds": times,
        "startup_seconds": starts,
        "median_seconds": med,
        "median_startup_seconds": med_start,
        "MB_per_s": {k: nbytes / v / 1e6 for k, v in med.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench", description=__doc__.split("\n")[0])
    p.add_argument("dataset", choices=["imagenet"])
    p.add_argument("--size", default="2GB", help="train bytes to generate (default 2GB)")
    p.add_argument("--dir", default="bench-data/imagenet-raw", help="raw folder layout (generated or reused)")
    p.add_argument("--out", default="bench-data/imagenet-out")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--resize-images", type=int, default=1500, help="images for the resize comparison (0: skip)")
    p.add_argument("--targets", action="store_true", help="local disk vs s3:// vs the portable runner instead")
    p.add_argument("--runners", action="store_true", help="the default, portable and Dask runners instead")
    p.add_argument("--json")
    args = p.parse_args(argv)
    from pipelines.imagenet import WNIDS

    n, size = make_photo_folder(
        os.path.join(args.dir, "train"),
        parse_size(args.size),
        pattern="{cls}/{cls}_{i}.JPEG",
        classes=tuple(WNIDS[::50]),
    )
    print(f"input: {n} JPEGs in 20 classes, {format_size(size)} under {args.dir}/train")
    os.makedirs(args.out, exist_ok=True)
    if args.runners:
        t = bench_runners(args.dir, args.out, args.repeat)
        for k in t["seconds"]:
            runs = ", ".join(f"{x:.1f}" for x in t["seconds"][k])
            share = t["median_startup_seconds"][k] / t["median_seconds"][k]
            print(
                f"{k:>22}: median {t['median_seconds'][k]:.1f}s = {t['MB_per_s'][k]:.0f} MB/s, start-up "
                f"{t['median_startup_seconds'][k]:.1f}s ({share:.0%})  (runs: {runs})"
            )
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"benchmark": "imagenet-job-runners", "cores": os.cpu_count(), **t}, f, indent=1)
        return 0
    if args.targets:
        t = bench_targets(args.dir, args.out, args.repeat)
        for k in t["seconds"]:
            runs = ", ".join(f"{x:.1f}" for x in t["seconds"][k])
            print(f"{k:>8}: median {t['median_seconds'][k]:.1f}s = {t['MB_per_s'][k]:.0f} MB/s  (runs: {runs})")
        print(f"to s3:// / to local disk = {t['speed_ratio_s3_over_local']:.2f}")
        print(f"portable runner (2 workers) / local runner = {t['speed_ratio_portable_over_local']:.2f}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"benchmark": "imagenet-job-targets", "cores": os.cpu_count(), **t}, f, indent=1)
        return 0
    r: dict = {
        "benchmark": "imagenet-job",
        "cores": os.cpu_count(),
        "repack": bench_repack(args.dir, args.out, args.repeat),
    }
    rp = r["repack"]
    for k in ("tar", "job"):
        runs = ", ".join(f"{t:.1f}" for t in rp["seconds"][k])
        print(f"{k:>4}: median {rp['median_seconds'][k]:.1f}s = {rp['MB_per_s'][k]:.0f} MB/s  (runs: {runs})")
    print(f"repack speed / tar cf speed = {rp['speed_ratio_job_over_tar']:.2f}  (target >= 0.50)")
    print(
        f"job peak memory (all processes): {format_size(rp['job_peak_rss_bytes'])} for {format_size(rp['bytes'])} input (target < 2 GB)"
    )
    if args.resize_images:
        rr = r["resize"] = bench_resize(args.dir, args.out, args.resize_images)
        print(
            f"resize to 512: job {rr['job_images_per_s_per_core']:.0f} images/s per core ({rr['cores_job']} cores), "
            f"PIL loop {rr['pil_images_per_s_per_core']:.0f} images/s on 1 core: "
            f"ratio {rr['ratio_job_over_pil_per_core']:.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
