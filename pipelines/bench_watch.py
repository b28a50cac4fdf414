"""`python -m pipelines.bench_watch`: the streaming ImageNet job (`--watch`) against the batch job, in one run.

Backlog: the same folder converted by the batch job and by a watcher started over it, alternately from a warm page
cache; the watcher's time is from its launch until its first generation is published (then it is stopped).
Figure: batch seconds / watcher seconds (target >= 0.8).

Latency: a watcher runs with `--interval`, and a `follow=True` loader reads epochs of the split in a thread.
`--increments` times, at a random moment, a few hundred new images are written into the class folders; latency
is from the last file written to (a) the publication of the generation holding them (its `published_at`) and (b)
the first batch of the loader holding one of them. Figures: medians (target (a) <= interval + 30 s).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

from shards.bench import make_photo_folder, warm_page_cache
from shards.units import format_size, parse_size

__all__ = ["main"]


def _cmd(raw: str, out: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipelines", "imagenet", "--input", raw, "--output", out, "--splits", "train",
            "--no-progress", *extra]  # fmt: skip


def _until_published(cmd: list[str], manifest: str, timeout: float = 3600) -> float:
    """Seconds from launching a watcher until `manifest` exists; the watcher is then stopped."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        while not os.path.exists(manifest):
            if proc.poll() is not None:
                raise RuntimeError(f"the watcher ended: {proc.stderr.read().decode()[-2000:]}")
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError("no generation published in time")
            time.sleep(0.02)
        return time.perf_counter() - t0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()


def bench_backlog(raw: str, out: str, repeat: int) -> dict:
    from pipelines.bench import run_measured

    times: dict[str, list[float]] = {"batch": [], "watch": []}
    for _ in range(repeat):
        for kind in ("batch", "watch"):
            dst = os.path.join(out, kind)
            shutil.rmtree(dst, ignore_errors=True)
            warm_page_cache(raw)
            if kind == "batch":
                times[kind].append(run_measured(_cmd(raw, dst))[0])
            else:
                cmd = _cmd(raw, dst, "--watch", "--interval", "600s")
                times[kind].append(_until_published(cmd, os.path.join(dst, "train", "manifest.json")))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"seconds": times, "median_seconds": med, "ratio_batch_over_watch": med["batch"] / med["watch"]}


class _Follower(threading.Thread):
    """Reads epochs of the split with a follow=True loader; records when each key is first seen."""

    def __init__(self, split: str):
        super().__init__(daemon=True)
        self.split, self.first_seen, self.stop = split, {}, threading.Event()

    def run(self) -> None:
        from loaders import imagenet_dali

        loader = imagenet_dali(self.split, batch_size=32, train=True, device="cpu", image_size=64, follow=True,
                               return_keys=True, num_threads=1)  # fmt: skip
        while not self.stop.is_set():
            for batch in loader:
                now = time.time()
                for k in batch["key"]:
                    self.first_seen.setdefault(k, now)
                if self.stop.is_set():
                    break


def _drop(raw: str, start: int, n: int, classes: list[str]) -> tuple[list[str], float]:
    from shards.photos import photo_jpeg

    keys = []
    for i in range(start, start + n):
        cls = classes[i % len(classes)]
        os.makedirs(os.path.join(raw, "train", cls), exist_ok=True)
        with open(os.path.join(raw, "train", cls, f"{cls}_{i}.JPEG"), "wb") as f:
            f.write(photo_jpeg(i, size=(500, 375)))
        keys.append(f"{cls}_{i}")
    return keys, time.time()


def bench_latency(work: str, interval: float, increments: int, per_increment: int, seed: int) -> dict:
    from pipelines.imagenet import WNIDS
    from shards.manifest import read_manifest

    raw, out = os.path.join(work, "latency-raw"), os.path.join(work, "latency-out")
    shutil.rmtree(raw, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    classes = list(WNIDS[::50])
    _drop(raw, 0, 200, classes)  # generation 1, before the clock starts
    cmd = _cmd(raw, out, "--watch", "--interval", f"{interval}s")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    split = os.path.join(out, "train")
    rng = random.Random(seed)
    publish, loader = [], []
    follower = None
    try:
        while not os.path.exists(os.path.join(split, "manifest.json")):
            time.sleep(0.05)
        follower = _Follower(split)
        follower.start()
        for n in range(increments):
            time.sleep(rng.uniform(0, interval))  # a random phase against the watcher's clock
            keys, dropped = _drop(raw, 1000 + n * per_increment, per_increment, classes)
            while True:
                m = read_manifest(split)
                gens = [g for g in m["generations"] if g["published_at"] >= dropped]
                if gens and m["num_samples"] + m["quarantine"]["count"] >= 200 + (n + 1) * per_increment:
                    break
                time.sleep(0.05)
            publish.append(max(g["published_at"] for g in gens) - dropped)
            deadline = time.time() + 600
            while not any(k in follower.first_seen for k in keys) and time.time() < deadline:
                time.sleep(0.05)
            loader.append(min(follower.first_seen.get(k, float("inf")) for k in keys) - dropped)
            print(f"  increment {n + 1}: published {publish[-1]:.1f}s, in the loader {loader[-1]:.1f}s after the drop")
    finally:
        if follower is not None:
            follower.stop.set()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
    return {
        "interval_s": interval,
        "images_per_increment": per_increment,
        "publish_latency_s": publish,
        "loader_latency_s": loader,
        "median_publish_latency_s": statistics.median(publish),
        "median_loader_latency_s": statistics.median(loader),
        "target_publish_latency_s": interval + 30,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench_watch", description=__doc__.split("\n")[0])
    p.add_argument("--size", default="400MB", help="backlog bytes to generate (default 400MB)")
    p.add_argument("--dir", default="bench-data/watch", help="working folder (backlog generated or reused)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--interval", type=float, default=15.0, help="the watcher's --interval in seconds (default 15)")
    p.add_argument("--increments", type=int, default=10, help="latency increments (default 10; 0: backlog only)")
    p.add_argument("--images", type=int, default=300, help="images per increment (default 300)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    from pipelines.imagenet import WNIDS

    raw = os.path.join(args.dir, "backlog-raw")
    n, size = make_photo_folder(os.path.join(raw, "train"), parse_size(args.size), pattern="{cls}/{cls}_{i}.JPEG",
                                classes=tuple(WNIDS[::50]))  # fmt: skip
    print(f"backlog: {n} JPEGs, {format_size(size)}")
    r: dict = {"benchmark": "imagenet-watch", "cores": os.cpu_count(), "backlog_images": n, "backlog_bytes": size}
    b = r["backlog"] = bench_backlog(raw, os.path.join(args.dir, "backlog-out"), args.repeat)
    for k in ("batch", "watch"):
        print(f"{k:>6}: median {b['median_seconds'][k]:.1f}s (runs: {', '.join(f'{x:.1f}' for x in b['seconds'][k])})")
    print(f"backlog: batch time / watcher time = {b['ratio_batch_over_watch']:.2f}  (target >= 0.8)")
    if args.increments < 1:
        return _save(r, args.json)
    lat = r["latency"] = bench_latency(args.dir, args.interval, args.increments, args.images, seed=16)
    print(f"latency over {args.increments} increments of {args.images} images, --interval {args.interval:g}s: median "
          f"{lat['median_publish_latency_s']:.1f}s to publication (target <= {lat['target_publish_latency_s']:.0f}s), "
          f"{lat['median_loader_latency_s']:.1f}s to a follow=True loader's batch")  # fmt: skip
    return _save(r, args.json)


def _save(r: dict, path: str | None) -> int:
    if path:
        with open(path, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
