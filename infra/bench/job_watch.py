"""`python -m pipelines.bench_watch`: the streaming ImageNet job (`--watch`) against the batch job, in one run.

Backlog: the same folder converted by the batch job and by a watcher started over it, alternately from a warm page
cache; the watcher's time is from its launch until its first generation is published (then it is stopped).
Figure: batch seconds / watcher seconds (target >= 0.8).

Latency: a watcher runs with `--interval`, and a `follow=True` loader reads epochs of the split in a thread.
`--increments` times, at a random moment, a few hundred new images are written into the class folders; latency
is from the last file written to (a) the publication of the generation holding them (its `published_at`) and (b)
the first batch of the loader holding one of them. Figures: medians (target (a) <= interval + 30 s).

Soak (`--soak SECONDS`): a watcher over a small folder, idle after its first generation, ticking every second;
the resident memory of its process tree is sampled every 10 s. Figure: growth from the first sample to the last
(target: flat within 50 MB over 10 minutes). `--soak-beam SECONDS` runs the same watcher on Beam's local streaming
runner (`-- --runner=FnApiRunner`) beside it, for comparison.
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

from infra.bench.pack import make_photo_folder, warm_page_cache
from shards.procs import stop
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
    from infra.bench.job_imagenet import run_measured

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
    from infra.photos import photo_jpeg

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


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            continue
    return total


def bench_soak(work: str, seconds: float, beam_seconds: float = 0.0) -> dict:
    """Idle watchers' memory over time: ours (no runner named) and, optionally, Beam's local streaming runner."""
    from pipelines.imagenet import WNIDS

    raw = os.path.join(work, "soak-raw")
    make_photo_folder(
        os.path.join(raw, "train"), parse_size("2MB"), pattern="{cls}/{cls}_{i}.JPEG", classes=tuple(WNIDS[:2])
    )
    runs = {"watch": (seconds, [])}
    if beam_seconds:
        runs["watch-beam-local-runner"] = (beam_seconds, ["--", "--runner=FnApiRunner"])
    procs, samples = {}, {}
    for name, (secs, extra) in runs.items():
        out = os.path.join(work, f"soak-out-{name}")
        shutil.rmtree(out, ignore_errors=True)
        cmd = _cmd(raw, out, "--watch", "--interval", "1s", "--stop-after", f"{secs + 60:.0f}s", *extra)
        procs[name] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL), os.path.join(out, "train", "manifest.json"))
        samples[name] = []
    for name, (proc, manifest) in procs.items():
        while not os.path.exists(manifest):
            if proc.poll() is not None:
                raise RuntimeError(f"the {name} watcher ended before its first generation")
            time.sleep(0.2)
    t0 = time.monotonic()
    while any(time.monotonic() - t0 <= runs[n][0] for n in runs):
        for name, (proc, _) in procs.items():
            if time.monotonic() - t0 <= runs[name][0]:
                samples[name].append((round(time.monotonic() - t0, 1), _tree_rss(proc.pid)))
        time.sleep(10)
    result = {}
    for name, (proc, _) in procs.items():
        stop(proc, 60)
        rss = [b for _, b in samples[name]]
        result[name] = {
            "seconds": runs[name][0],
            "samples": samples[name],
            "rss_first": rss[0],
            "rss_last": rss[-1],
            "rss_max": max(rss),
            "growth_bytes": rss[-1] - rss[0],
        }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.bench_watch", description=__doc__.split("\n")[0])
    p.add_argument("--size", default="400MB", help="backlog bytes to generate (default 400MB)")
    p.add_argument("--dir", default="bench-data/watch", help="working folder (backlog generated or reused)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--interval", type=float, default=15.0, help="the watcher's --interval in seconds (default 15)")
    p.add_argument("--increments", type=int, default=10, help="latency increments (default 10; 0: backlog only)")
    p.add_argument("--images", type=int, default=300, help="images per increment (default 300)")
    p.add_argument("--soak", type=float, default=0, help="only the idle soak, this many seconds (e.g. 600)")
    p.add_argument("--soak-beam", type=float, default=0, help="with --soak: Beam's local runner beside it, seconds")
    p.add_argument("--json")
    args = p.parse_args(argv)
    from pipelines.imagenet import WNIDS

    if args.soak:
        r = {
            "benchmark": "imagenet-watch-soak",
            "cores": os.cpu_count(),
            "soak": bench_soak(args.dir, args.soak, args.soak_beam),
        }
        for name, x in r["soak"].items():
            print(
                f"{name}: idle {x['seconds']:.0f}s, memory {format_size(x['rss_first'])} -> "
                f"{format_size(x['rss_last'])} (max {format_size(x['rss_max'])}), growth "
                f"{x['growth_bytes'] / 1e6:+.1f} MB (target: within 50 MB)"
            )
        return _save(r, args.json)

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
