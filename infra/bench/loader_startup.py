"""`python -m loaders.bench startup`: from a loader's call to its first batch over a split of 200,000 shards on
the loopback S3 endpoint - the split's manifest as a shard table (what `write_manifest` writes from 10,000 shards
on) and, in the same run, the same split with its whole shard list in manifest.json (how every split was written
before: ~50 MB of JSON at 200,000 shards).

    python -m loaders.bench startup [--shards 200000] [--samples-per-shard 3200] [--world-size 1024] [--json F]

The split is generated: one real shard of photo-like JPEGs, copied (server-side) to the names of the shards the
measured rank's first batches read; the other names are in the manifest only (the loader prefetches them in the
background and finds them missing, which no batch measured here waits for). Each figure comes from a fresh
process (imports done first, not timed): wall seconds from `imagenet_dali(...)` to its first batch, and in a
second process the peak of what Python and NumPy allocate meanwhile (tracemalloc; it slows the run, so it is not
timed) plus what Arrow holds after it - the loader's metadata, an upper bound: it also holds the modules imported
on the way, DALI's pipeline objects and the parsed indexes of the shards the first batch opens - with the peak RSS
growth (decoded images, mapped shards and all) beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys

__all__ = ["main"]

CHILD = """
import json, os, sys, time
args = json.loads(sys.argv[1])
import numpy as np, pyarrow, torch
from loaders import imagenet_dali

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def peak_rss():  # this process's own peak (getrusage's ru_maxrss also counts its parent's RSS at the fork)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

if args["traced"]:
    import tracemalloc
    tracemalloc.start()
before = rss()
cache = args["cache"]
t = time.perf_counter()
loader = imagenet_dali(args["url"], batch_size=args["batch"], train=False, image_size=32, device="cpu",
                       rank=args["rank"], world_size=args["world"], cache_dir=cache, num_threads=2)
made = time.perf_counter() - t
built = tracemalloc.get_traced_memory()[1] if args["traced"] else 0
batch = next(iter(loader))
first = time.perf_counter() - t
out = {"construct_seconds": made, "first_batch_seconds": first, "batch_rows": int(batch["label"].shape[0]),
       "arrow_bytes": pyarrow.total_allocated_bytes(),
       "max_rss_growth_bytes": peak_rss() - before}
if args["traced"]:
    out["traced_peak_bytes"] = tracemalloc.get_traced_memory()[1]
    out["traced_construct_peak_bytes"] = built
    top = tracemalloc.take_snapshot().statistics("lineno")[:8]
    out["traced_top"] = [f"{s.traceback[0].filename}:{s.traceback[0].lineno} {s.size / 1e6:.1f} MB" for s in top]
print(json.dumps(out))
sys.stdout.flush()
os._exit(0)  # the cache's prefetch threads are still fetching
"""


def _shard(samples: int) -> tuple[bytes, bytes]:
    """One tar shard of `samples` photo-like 32x32 JPEGs with labels, and its index."""
    from infra.photos import photo_jpeg
    from shards.wds import TarShardWriter

    photos = [photo_jpeg(i, size=(32, 32)) for i in range(64)]
    f = io.BytesIO()
    w = TarShardWriter(f, fields={"jpg", "cls"})
    for i in range(samples):
        w.write(f"s{i:07d}", {"jpg": photos[i % len(photos)], "cls": str(i % 1000).encode()})
    w.close()
    return f.getvalue(), w.idx_bytes()


def _split(url: str, args: argparse.Namespace, table: bool, needed: set[int], tar: bytes, idx: bytes) -> None:
    """The split at `url`: the manifest (a shard table, or the list in the JSON) and the `needed` shards."""
    import fsspec

    from shards import storage
    from shards.manifest import MANIFEST_NAME, build_manifest, dumps_manifest, write_manifest

    fs = fsspec.filesystem("s3")
    src = url.rstrip("/") + "-src"
    storage.write_bytes(f"{src}/shard.tar", tar)
    storage.write_bytes(f"{src}/shard.idx", idx)
    for i in sorted(needed):
        fs.copy(f"{src}/shard.tar", f"{url}/shard-{i:06d}.tar")
        fs.copy(f"{src}/shard.idx", f"{url}/shard-{i:06d}.idx")
    digest = hashlib.sha256(tar).hexdigest()
    entries = [
        {"path": f"shard-{i:06d}.tar", "idx": f"shard-{i:06d}.idx", "num_samples": args.samples_per_shard,
         "num_bytes": len(tar), "sha256": digest}
        for i in range(args.shards)
    ]  # fmt: skip
    m = build_manifest(
        dataset="imagenet",
        split="train",
        fields={"jpg": "image", "cls": "label"},
        classes=[f"c{i}" for i in range(1000)],
        shards=entries,
        source={"url": "generated", "inputs_seen": args.shards * args.samples_per_shard},
    )
    if table:
        write_manifest(url, m)
    else:  # the shard list in manifest.json, as before shard tables
        storage.write_bytes(f"{url}/{MANIFEST_NAME}", dumps_manifest(m))


def _child(args: argparse.Namespace, url: str, traced: bool) -> dict:
    import shutil
    import tempfile

    cache = tempfile.mkdtemp(prefix="startup-cache-")
    arg = json.dumps({"url": url, "batch": args.batch_size, "rank": args.rank, "world": args.world_size,
                      "traced": traced, "cache": cache})  # fmt: skip
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    from shards.cli import OneLineParser

    p = OneLineParser(prog="python -m loaders.bench startup", description=__doc__.split("\n")[0])
    p.add_argument("--shards", type=int, default=200_000, help="shards in the split (default 200000)")
    p.add_argument("--samples-per-shard", type=int, default=3200, help="default 3200")
    p.add_argument("--world-size", type=int, default=1024, help="default 1024")
    p.add_argument("--rank", type=int, help="the rank measured (default: the last)")
    p.add_argument("--batch-size", type=int, default=256, help="default 256")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    args.rank = args.world_size - 1 if args.rank is None else args.rank
    if not (args.shards >= 1 and args.samples_per_shard >= 1 and 0 <= args.rank < args.world_size):
        p.error("--shards and --samples-per-shard must be >= 1, and --rank in [0, --world-size)")

    from infra.local_s3 import local_s3
    from loaders.plan import plan_epoch

    sizes = [args.samples_per_shard] * args.shards
    plan = plan_epoch(sizes, seed=0, epoch=0, world_size=args.world_size, rank=args.rank)
    needed = set(plan.shard[: args.batch_size * 8].tolist())  # the first batches' shards (DALI runs ahead)
    tar, idx = _shard(args.samples_per_shard)
    print(f"one shard: {len(tar) / 1e6:.1f} MB, {args.samples_per_shard} samples; copied to {len(needed)} names")
    results: dict = {"args": vars(args), "shard_bytes": len(tar), "copies": len(needed)}
    with local_s3(buckets=("bench",)) as env:
        os.environ.update(env)
        for name, table in (("shard table", True), ("JSON list", False)):
            url = f"s3://bench/startup-{'table' if table else 'json'}"
            _split(url, args, table, needed, tar, idx)
            timed, traced = _child(args, url, False), _child(args, url, True)
            results[name] = {"timed": timed, "traced": traced}
            if "error" in timed or "error" in traced:
                print(f"{name:>12}: {timed.get('error') or traced.get('error')}")
                continue
            meta = traced["traced_peak_bytes"] + traced["arrow_bytes"]
            print(
                f"{name:>12}: call -> first batch {timed['first_batch_seconds']:6.2f} s (constructed in "
                f"{timed['construct_seconds']:.2f} s); metadata {meta / 1e6:6.1f} MB (Python+NumPy peak "
                f"{traced['traced_peak_bytes'] / 1e6:.1f} MB, {traced['traced_construct_peak_bytes'] / 1e6:.1f} MB "
                f"of it by the end of the call, + Arrow {traced['arrow_bytes'] / 1e6:.1f} MB); peak RSS growth "
                f"{timed['max_rss_growth_bytes'] / 1e6:.0f} MB"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
