"""`python -m loaders.bench mix --data SPLIT`: a mixture of 3 sources against one source of the same samples.

The split's shards are hard-linked into three splits (a third of the shards each, with their own manifests), so
both configurations read the very same bytes: `imagenet_dali(SPLIT)` against `imagenet_dali(mix(a, b, c))` with
weights equal to the sources' sizes (every sample once an epoch, as the single source). Interleaved rounds of
`--seconds` each; figure: the median images/s of the mixture over the single source's (target >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import os

from shards import storage
from shards.manifest import build_manifest, read_manifest, write_manifest

__all__ = ["main", "split_in_three"]


def split_in_three(split: str, folder: str) -> list[str]:
    """Three splits under `folder` holding a third of `split`'s shards each, hard-linked (no copy)."""
    m = read_manifest(split)
    urls = []
    for part in range(3):
        url = os.path.join(folder, f"part{part}")
        os.makedirs(url, exist_ok=True)
        shards = m["shards"][part::3]
        for e in shards:
            for name in (e["path"], e["idx"]):
                if not os.path.exists(os.path.join(url, name)):
                    os.link(os.path.join(split, name), os.path.join(url, name))
        n = sum(e["num_samples"] for e in shards)
        write_manifest(url, build_manifest(dataset=m["dataset"], split=f"part{part}", fields=m["fields"],
                                           shards=shards, classes=m["classes"], params=m["params"],
                                           source={"url": split, "inputs_seen": n}))  # fmt: skip
        urls.append(url)
    return urls


def main(argv: list[str] | None = None) -> int:
    from infra.bench.loader import _measure_loader
    from infra.bench.rounds import interleaved
    from loaders import Source, imagenet_dali, mix

    p = argparse.ArgumentParser(prog="python -m loaders.bench mix", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="an ImageNet split on local disk")
    p.add_argument("--parts", default=None, help="folder for the three hard-linked splits (default: <data>-mix)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--json")
    args = p.parse_args(argv)
    args.device = "cpu"
    split = storage.local_path(args.data.rstrip("/"))
    parts = split_in_three(split, args.parts or split + "-mix")
    sizes = [read_manifest(u)["num_samples"] for u in parts]
    common = dict(batch_size=args.batch_size, train=True, device="cpu", num_threads=args.workers,
                  image_size=args.image_size)  # fmt: skip
    loaders = {
        "single": imagenet_dali(split, **common),
        "mixture": imagenet_dali(mix(*(Source(u, weight=n) for u, n in zip(parts, sizes, strict=True))), **common),
    }
    runs, med = interleaved({k: lambda loader=loader: _measure_loader(loader, args, "image")
                             for k, loader in loaders.items()}, args.rounds)  # fmt: skip
    ratio = med["mixture"] / med["single"]
    print(f"mixture of 3 / one source = {ratio:.3f} ({med['mixture']:.0f} vs {med['single']:.0f} images/s; "
          "target >= 0.95)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "imagenet-mixture", "cores": os.cpu_count(), "sizes": sizes, "runs": runs,
                       "median_images_per_s": med, "ratio_mixture_over_single": ratio}, f, indent=1)  # fmt: skip
    return 0
