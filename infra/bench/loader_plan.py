"""`python -m loaders.bench plan`: what one rank's epoch plan costs at scale - ours, and the whole-epoch plan it
replaced (every sample of the epoch ordered on every rank) where that one fits, in the same run.

    python -m loaders.bench plan --samples 2e9 --shards 200000 --world-size 1024 [--sources 3] [--json F]

Each measurement runs in a fresh process (the last rank, epoch 0, `open_shards` 8): wall time of `plan_epoch` and
its peak memory (tracemalloc's peak of what NumPy and Python allocate; the process's peak RSS beside it). With
`--curve`, the same share per rank (samples / world size) and the same samples per shard from 1 M samples up to
`--samples`: the cost should stay flat while the dataset grows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

__all__ = ["main", "measure"]

CHILD = """
import json, resource, sys, time, tracemalloc
import numpy as np
from loaders.plan import SourcePlan, epoch_order, plan_epoch
samples, shards, world, sources, how = json.loads(sys.argv[1])
per_shard = max(1, samples // shards)
share = shards // sources
plans = [SourcePlan(tuple([per_shard] * share), take=per_shard * share) for _ in range(sources)]
tracemalloc.start()
t = time.perf_counter()
if how == "ours":
    n = len(plan_epoch(plans, seed=0, epoch=0, world_size=world, rank=world - 1))
else:  # the whole epoch's order, then the rank's block (the plan as it was first written)
    src, shard, sample = epoch_order(plans, seed=0, epoch=0, open_shards=8)
    per = len(shard) // world
    n = len(shard[(world - 1) * per : world * per])
seconds = time.perf_counter() - t
peak = tracemalloc.get_traced_memory()[1]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_bytes": peak, "max_rss_bytes": rss, "own_samples": n}))
"""


def measure(samples: int, shards: int, world: int, sources: int, how: str, timeout: float = 600) -> dict:
    """One plan computed in a fresh process: {seconds, peak_bytes, max_rss_bytes, own_samples}."""
    arg = json.dumps([samples, shards, world, sources, how])
    r = subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout)


def _line(what: str, samples: int, shards: int, world: int, m: dict) -> str:
    if "error" in m:
        return f"{what:>12} {samples:>14,} samples {shards:>8,} shards {world:>6,} ranks: {m['error']}"
    return (
        f"{what:>12} {samples:>14,} samples {shards:>8,} shards {world:>6,} ranks: {m['seconds']:8.3f} s  "
        f"{m['peak_bytes'] / 1e6:8.1f} MB peak  ({m['max_rss_bytes'] / 1e6:.0f} MB RSS, {m['own_samples']:,} own)"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loaders.bench plan", description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=float, default=2e9, help="samples in the epoch (default 2e9)")
    p.add_argument("--shards", type=int, default=200_000, help="shards, over all sources (default 200,000)")
    p.add_argument("--world-size", type=int, default=1024, help="ranks (default 1024); the last one is measured")
    p.add_argument("--sources", type=int, default=1, help="sources of a mixture, equal in size (default 1)")
    p.add_argument("--curve", action="store_true", help="also 1 M ... --samples at the same share per rank")
    p.add_argument(
        "--baseline-up-to",
        type=float,
        default=2e7,
        help="run the whole-epoch plan up to this many samples (default 2e7; more takes minutes and GBs)",
    )
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--plot", help="a PNG of the curve (with --curve)")
    a = p.parse_args(argv)
    samples, per_shard = int(a.samples), max(1, int(a.samples) // a.shards)
    share = max(1, samples // a.world_size)
    sizes = [samples]
    if a.curve:
        sizes = sorted({int(x) for x in (1e6, 1e7, 1e8, 1e9, samples) if share <= x <= samples})
    rows = []
    for n in sizes:
        world, shards = max(1, n // share), max(a.sources, n // per_shard)
        row = {"samples": n, "shards": shards, "world_size": world, "sources": a.sources}
        row["ours"] = measure(n, shards, world, a.sources, "ours")
        print(_line("ours", n, shards, world, row["ours"]), flush=True)
        if n <= a.baseline_up_to:
            row["whole_epoch"] = measure(n, shards, world, a.sources, "whole")
            print(_line("whole epoch", n, shards, world, row["whole_epoch"]), flush=True)
        rows.append(row)
    out = {"command": "python -m loaders.bench plan " + " ".join(sys.argv[1:] if argv is None else argv), "rows": rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    if a.plot and a.curve:
        _plot(rows, a.plot)
    return 0


def _plot(rows: list[dict], path: str) -> None:
    """Two log-log panels (seconds, peak MB per rank) against the samples in the epoch, drawn with PIL."""
    import math

    from PIL import Image, ImageDraw

    img = Image.new("RGB", (1000, 420), "white")
    d = ImageDraw.Draw(img)
    colours = {"ours": (31, 119, 180), "whole_epoch": (214, 39, 40)}
    names = {"ours": "per-rank plan", "whole_epoch": "whole-epoch plan"}
    xs = [r["samples"] for r in rows]
    for panel, (what, unit) in enumerate((("seconds", "s per rank"), ("peak_bytes", "peak MB per rank"))):
        left, top, w, h = 70 + panel * 500, 40, 400, 300
        scale = 1e-6 if what == "peak_bytes" else 1.0
        vals = [r[k][what] * scale for r in rows for k in colours if k in r and "error" not in r[k]]
        lo_y, hi_y = math.floor(math.log10(min(vals))), math.ceil(math.log10(max(vals)))
        lo_x, hi_x = math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)))
        hi_y, hi_x = max(hi_y, lo_y + 1), max(hi_x, lo_x + 1)

        def at(x: float, y: float, lo_x=lo_x, hi_x=hi_x, lo_y=lo_y, hi_y=hi_y, left=left, top=top, w=w, h=h):
            fx = (math.log10(x) - lo_x) / (hi_x - lo_x)
            fy = (math.log10(y) - lo_y) / (hi_y - lo_y)
            return left + fx * w, top + h - fy * h

        d.rectangle([left, top, left + w, top + h], outline="black")
        for e in range(lo_x, hi_x + 1):
            d.text((at(10**e, 10**lo_y)[0] - 10, top + h + 5), f"1e{e}", fill="black")
        for e in range(lo_y, hi_y + 1):
            d.text((left - 45, at(10**lo_x, 10**e)[1] - 6), f"1e{e}", fill="black")
        d.text((left, top - 30), f"{unit} vs samples in the epoch (same share per rank)", fill="black")
        for k, colour in colours.items():
            pts = [at(r["samples"], r[k][what] * scale) for r in rows if k in r and "error" not in r[k]]
            if len(pts) > 1:
                d.line(pts, fill=colour, width=3)
            for x, y in pts:
                d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
            d.text((left + 10, top + 10 + 15 * list(colours).index(k)), names[k], fill=colour)
    img.save(path)


if __name__ == "__main__":
    raise SystemExit(main())
