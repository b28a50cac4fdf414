"""`python -m shards.bench pack`: `shards pack` against `tar cf` on the same folder of photo-like JPEGs, in one run.

Both are run as commands, alternately, several times, from a warm page cache, writing to the same disk; the
figure that matters is the ratio of their medians (single times are noisy on shared machines).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

from shards.units import format_size, parse_size

__all__ = ["make_photo_folder", "warm_page_cache", "bench_pack", "main"]


def _write_photo(args: tuple[str, str, tuple[str, ...], int, int, tuple[int, int]]) -> int:
    from infra.photos import photo_jpeg

    folder, pattern, classes, i, quality, size = args
    path = os.path.join(folder, pattern.format(i=i, cls=classes[i % len(classes)] if classes else ""))
    data = photo_jpeg(i, size=size, quality=quality)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def make_photo_folder(
    folder: str,
    total: int,
    *,
    pattern: str = "img{i:07d}.jpg",
    classes: tuple[str, ...] = (),
    quality: int = 96,
    size: tuple[int, int] = (640, 480),
    workers: int | None = None,
) -> tuple[int, int]:
    """Fill `folder` with photo-like JPEGs (640x480 at quality 96: about 105 KB) until `total` bytes; reuse what is there.

    File i is named `pattern.format(i=i, cls=classes[i % len(classes)])`, e.g. "{cls}/{cls}_{i}.JPEG".
    """
    os.makedirs(folder, exist_ok=True)
    have = [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files]
    done = sum(os.path.getsize(p) for p in have)
    if done >= total:
        return len(have), done
    per_file = 105_000 * size[0] * size[1] / (640 * 480)
    estimate = max(1, int((total - done) / per_file * 1.02))
    jobs = [(folder, pattern, classes, i, quality, size) for i in range(len(have), len(have) + estimate)]
    with cf.ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        for n in pool.map(_write_photo, jobs, chunksize=32):
            done += n
    count = len(have) + len(jobs)
    while done < total:
        done += _write_photo((folder, pattern, classes, count, quality, size))
        count += 1
    return count, done


def warm_page_cache(folder: str) -> None:
    """Read every file under `folder` once, so timed runs start from a warm page cache."""
    for d, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(d, name), "rb") as f:
                while f.read(1 << 20):
                    pass


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def bench_pack(folder: str, out: str, *, repeat: int, shard_size: str, workers: int) -> dict:
    warm_page_cache(folder)
    nbytes = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    nfiles = len(os.listdir(folder))
    tar_out, pack_out = os.path.join(out, "tar-cf.tar"), os.path.join(out, "packed")
    pack_cmd = [sys.executable, "-m", "shards", "pack", folder, pack_out, "--shard-size", shard_size]
    pack_cmd += ["--workers", str(workers)]
    times: dict[str, list[float]] = {"tar": [], "pack": []}
    for i in range(repeat):
        # ABBA order: whichever runs right after a large delete pays for the filesystem's discard
        for name in ("tar", "pack") if i % 2 == 0 else ("pack", "tar"):
            if name == "pack":  # each tool replaces only its own previous output
                shutil.rmtree(pack_out, ignore_errors=True)
            elif os.path.exists(tar_out):
                os.unlink(tar_out)
            subprocess.run(["sync"], check=False)
            cmd = ["tar", "cf", tar_out, "-C", folder, "."] if name == "tar" else pack_cmd
            times[name].append(_timed(cmd))
    verify = subprocess.run([sys.executable, "-m", "shards", "verify", pack_out], capture_output=True, text=True)
    if verify.returncode != 0:
        raise RuntimeError(f"packed output does not verify: {verify.stderr}")
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "benchmark": "pack-vs-tar",
        "files": nfiles,
        "bytes": nbytes,
        "mean_file_bytes": nbytes // max(1, nfiles),
        "repeat": repeat,
        "shard_size": shard_size,
        "pack_workers": workers,
        "seconds": times,
        "median_seconds": med,
        "MB_per_s": {k: nbytes / v / 1e6 for k, v in med.items()},
        "speed_ratio_pack_over_tar": med["tar"] / med["pack"],
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "view":  # the page of `shards view` on a loopback S3 endpoint (infra/bench/view.py)
        from infra.bench.view import main as view_main

        return view_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m shards.bench", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="which", required=True)
    s = sub.add_parser("pack", help="shards pack vs tar cf on ~110 KB photo-like JPEGs")
    s.add_argument("--size", default="1GB", help="total input bytes to generate (default 1GB)")
    s.add_argument("--dir", default="bench-data/photos", help="input folder (generated or reused)")
    s.add_argument("--out", default="bench-data/out", help="where outputs are written (deleted between runs)")
    s.add_argument("--repeat", type=int, default=3)
    s.add_argument("--shard-size", default="256MB")
    s.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    s.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    n, size = make_photo_folder(args.dir, parse_size(args.size))
    print(f"input: {n} JPEGs, {format_size(size)} in {args.dir} (ready in {time.perf_counter() - t0:.0f}s)")
    os.makedirs(args.out, exist_ok=True)
    r = bench_pack(args.dir, args.out, repeat=args.repeat, shard_size=args.shard_size, workers=args.workers)
    for k in ("tar", "pack"):
        runs = ", ".join(f"{t:.2f}" for t in r["seconds"][k])
        print(f"{k:>5}: median {r['median_seconds'][k]:.2f}s = {r['MB_per_s'][k]:.0f} MB/s  (runs: {runs})")
    print(f"pack speed / tar cf speed = {r['speed_ratio_pack_over_tar']:.2f}  (target >= 0.80)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
