"""`python -m loaders.bench coco`: COCO's train graph with polygons against a PIL + pycocotools DataLoader doing the
same work, on equal cores; and the loader's start-up time on two split sizes against pycocotools' JSON load.

Throughput: a generated COCO of photo-like 640 x 480 JPEGs with ~7 polygon objects each (`infra/fake_coco.py`),
converted by `python -m pipelines coco`. `coco_dali(task="instance", masks=False)` (bbox-aware random crop fused
with decoding, flip and resize of pixels, boxes and polygons; `--workers` DALI threads) against a torch DataLoader
(`--workers` worker processes) over the raw folder: pycocotools' `COCO` for the annotations, PIL to decode, the
same crop sampling as DALI's (`loaders.baselines.bbox_crop`), boxes and polygons moved into the crop and flipped,
resize to S x S, normalize, boxes padded and polygons packed per batch. Interleaved rounds of `--seconds` each.

Start-up: from calling the loader to holding its first batch, in a fresh process (median of 3), on splits of `--startup-sizes`
images (tiny JPEGs; ~7.3 annotations each, COCO's ratio; shards of ~312 samples in both, so that only the split's
size differs):
`coco_dali` reads a manifest and the shards its first batch needs, so it should not grow with the split; a
pycocotools dataset parses the whole JSON first, on every rank. Both include importing torch (~1.8 s here).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import subprocess
import sys

import numpy as np

__all__ = ["PycocoInstances", "main"]


class PycocoInstances:
    """The baseline dataset (map-style): the raw folder and its instances JSON through pycocotools, PIL."""

    def __init__(self, root: str, image_size: int):
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):  # "loading annotations into memory..."
            self.coco = COCO(os.path.join(root, "annotations", "instances_train2017.json"))
        self.root, self.size = root, image_size
        self.ids = sorted(self.coco.imgs)
        self.labels = {cid: i for i, cid in enumerate(sorted(self.coco.cats))}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image

        from infra.bench.baselines import _normalized, bbox_crop

        rng = random.Random()
        info = self.coco.imgs[self.ids[i]]
        anns = self.coco.imgToAnns.get(info["id"], [])
        w, h = info["width"], info["height"]
        boxes = np.array([[x / w, y / h, (x + bw) / w, (y + bh) / h] for x, y, bw, bh in (a["bbox"] for a in anns)],
                         np.float32).reshape(-1, 4)  # fmt: skip
        crop, boxes, kept = bbox_crop(boxes, np.arange(len(anns)), rng)
        size = crop[2:] - crop[:2]
        polygons = [((np.asarray(p, np.float32).reshape(-1, 2) / [w, h] - crop[:2]) / size, j)
                    for j, k in enumerate(kept.tolist()) for p in anns[k]["segmentation"]]  # fmt: skip
        path = os.path.join(self.root, "train2017", info["file_name"])
        S = self.size
        with Image.open(path) as im:
            im = im.convert("RGB")
            box = (crop[0] * im.width, crop[1] * im.height, crop[2] * im.width, crop[3] * im.height)
            arr = np.asarray(im.resize((S, S), Image.BILINEAR, box=box), dtype=np.float32)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
            boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1).reshape(-1, 4)
            polygons = [(np.stack([1 - p[:, 0], p[:, 1]], 1), j) for p, j in polygons]
        labels = np.array([self.labels[anns[k]["category_id"]] for k in kept.tolist()], np.int64)
        return _normalized(arr), torch.from_numpy(boxes.copy()), labels, polygons, os.path.getsize(path)


def _collate(items):
    import torch

    images, boxes, labels, polygons, sizes = zip(*items, strict=True)
    m = max((len(b) for b in boxes), default=0)
    padded, ids = torch.zeros(len(boxes), m, 4), torch.full((len(boxes), m), -1, dtype=torch.int64)
    for j, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        padded[j, : len(b)], ids[j, : len(lab)] = b, torch.from_numpy(lab)
    rows, vertices = [], []
    for polys in polygons:  # DALI's layout: [object, first, end) over one vertex array per image
        first, r = 0, []
        for p, j in polys:
            r.append((j, first, first + len(p)))
            first += len(p)
        rows.append(torch.tensor(r, dtype=torch.int32).reshape(-1, 3))
        vertices.append(torch.from_numpy(np.concatenate([p for p, _ in polys]) if polys else np.zeros((0, 2))))
    return {"image": torch.stack(images), "boxes": padded, "labels": ids, "polygons": rows, "vertices": vertices,
            "n": len(images), "bytes": sum(sizes)}  # fmt: skip


def baseline_batches(root: str, batch_size: int, workers: int, image_size: int):
    import torch

    loader = torch.utils.data.DataLoader(
        PycocoInstances(root, image_size), batch_size=batch_size, shuffle=True, num_workers=workers,
        collate_fn=_collate, persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
    )  # fmt: skip
    return lambda: iter(loader)


def _convert(raw: str, out: str, *extra: str) -> str:
    split = os.path.join(out, "train")
    if not os.path.exists(os.path.join(split, "manifest.json")):
        cmd = [sys.executable, "-m", "pipelines", "coco", "--input", raw, "--output", out, "--splits", "train",
               "--no-progress", *extra]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return split


STARTUP = {
    "coco_dali": "from loaders import coco_dali\nt0 = time.perf_counter()\nb = next(iter(coco_dali({split!r}, "
    "batch_size=32, task='instance', masks=False, device='cpu')))",
    "pycocotools": "from infra.bench.loader_coco import PycocoInstances, _collate\nt0 = time.perf_counter()\n"
    "d = PycocoInstances({raw!r}, 512)\nb = _collate([d[i] for i in range(32)])",
}


def _startup(which: str, raw: str, split: str) -> float:
    code = "import time\n" + STARTUP[which].format(split=split, raw=raw) + "\nprint(time.perf_counter() - t0)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def main(argv: list[str] | None = None) -> int:
    from infra.fake_coco import write_coco

    p = argparse.ArgumentParser(prog="python -m loaders.bench coco", description=__doc__.split("\n")[0])
    p.add_argument("--dir", default="bench-data/coco-photos", help="the generated COCO (reused when present)")
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--rounds", type=int, default=3, help="throughput rounds (0: only the start-up times)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--startup-sizes", default="5000,118287", help="split sizes for the start-up times ('' skips)")
    p.add_argument("--json")
    args = p.parse_args(argv)
    args.device = "cpu"
    write_coco(args.dir, args.images, round(args.images * 7.3), photos=True)
    split = _convert(args.dir, args.dir + "-out")
    result: dict = {"benchmark": "coco-loader-cpu", "cores": os.cpu_count(), "workers": args.workers,
                    "images": args.images, "batch_size": args.batch_size, "image_size": args.image_size}  # fmt: skip
    if args.rounds:
        result |= _throughput(args, split)
    elif args.json and os.path.exists(args.json):  # --rounds 0: the start-up times only, beside earlier rounds
        with open(args.json) as f:
            result = json.load(f)
    startup: dict[str, dict[str, float]] = {}
    for n in [int(x) for x in args.startup_sizes.split(",") if x]:
        raw = f"{args.dir}-startup-{n}"
        write_coco(raw, n, round(n * 7.3))
        # shards of ~312 samples in both (COCO's 256 MB shards hold ~1,600 images): what a first batch opens
        # (`open_shards`) and checks is then the same, and only the split's size differs
        tiny = _convert(raw, raw + "-out", "--shard-size", "1TB", "--min-shards", str(max(8, n // 312)))
        startup[str(n)] = {which: statistics.median(_startup(which, raw, tiny) for _ in range(3)) for which in STARTUP}
        print(f"start-up, {n} images: " + ", ".join(f"{k} {v:.2f} s" for k, v in startup[str(n)].items()), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result | {"startup_seconds": startup}, f, indent=1)
    return 0


def _throughput(args: argparse.Namespace, split: str) -> dict:
    from infra.bench.loader import _measure_loader, _measure_loop
    from infra.bench.rounds import interleaved
    from loaders import coco_dali

    ours = coco_dali(split, batch_size=args.batch_size, task="instance", masks=False, device="cpu",
                     num_threads=args.workers, image_size=args.image_size)  # fmt: skip
    theirs = baseline_batches(args.dir, args.batch_size, args.workers, args.image_size)
    runs, med = interleaved({"coco_dali": lambda: _measure_loader(ours, args, "image"),
                             "pil_pycocotools": lambda: _measure_loop(theirs, args)}, args.rounds)  # fmt: skip
    ratio = med["coco_dali"] / med["pil_pycocotools"]
    print(f"coco_dali / PIL + pycocotools = {ratio:.2f}x ({med['coco_dali']:.1f} vs {med['pil_pycocotools']:.1f} "
          f"images/s, {args.workers} cores each; target >= 2)")  # fmt: skip
    return {"runs": runs, "median_images_per_s": med, "ratio": ratio}
