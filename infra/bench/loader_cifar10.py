"""`python -m loaders.bench cifar10 --data SPLIT`: `cifar10_dali`'s train graph against a torch DataLoader doing the
same augmentation with PIL and NumPy, as people write it, on equal cores.

The baseline holds the split's images decoded in memory (as torchvision's `CIFAR10` holds the unpickled batches)
and per item does what `RandomCrop(32, padding=4)`, `RandomHorizontalFlip()`, `ToTensor()` and `Normalize()` do:
`Image.fromarray`, zero-pad by 4, crop 32 x 32 at a random offset, flip with p = 0.5, scale to [0, 1] and
normalize, CHW; batches of `--batch-size` collated by the DataLoader's `--workers` processes. The loader reads
the shards every epoch (`--workers` DALI threads), decoding each PNG of a `png` split. Interleaved rounds of `--seconds` each.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random

import numpy as np

__all__ = ["InMemoryCifar", "main"]


class InMemoryCifar:
    """The baseline dataset: images N x 32 x 32 x 3 uint8 and labels, augmented per item with PIL + NumPy."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        from loaders.cifar10 import CIFAR_MEAN, CIFAR_STD

        self.images, self.labels = images, labels
        self.mean, self.std = np.array(CIFAR_MEAN, np.float32), np.array(CIFAR_STD, np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image

        img = Image.fromarray(self.images[i])
        padded = np.pad(np.asarray(img), ((4, 4), (4, 4), (0, 0)))
        y, x = random.randint(0, 8), random.randint(0, 8)
        arr = padded[y : y + 32, x : x + 32]
        if random.random() < 0.5:
            arr = arr[:, ::-1]
        arr = (arr.astype(np.float32) / 255 - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))), int(self.labels[i])


def _decoded(split: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    from shards import storage
    from shards.manifest import read_manifest
    from shards.wds import iter_samples

    images, labels = [], []
    for e in read_manifest(split)["shards"]:
        for _, s in iter_samples(io.BytesIO(storage.read_bytes(storage.join(split, e["path"])))):
            if "npy" in s:
                images.append(np.load(io.BytesIO(s["npy"])))
            else:
                images.append(np.asarray(Image.open(io.BytesIO(s["png"])).convert("RGB")))
            labels.append(int(s["cls"]))
    return np.stack(images), np.array(labels)


def main(argv: list[str] | None = None) -> int:
    import torch

    from infra.bench.loader import _measure_loader, _measure_loop
    from infra.bench.rounds import interleaved
    from loaders import cifar10_dali

    p = argparse.ArgumentParser(prog="python -m loaders.bench cifar10", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a CIFAR-10 split written by `python -m pipelines cifar10`")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json")
    args = p.parse_args(argv)
    args.device = "cpu"
    ours = cifar10_dali(args.data, batch_size=args.batch_size, device="cpu", num_threads=args.workers)
    dataset = InMemoryCifar(*_decoded(args.data))
    per_sample = sum(e["num_bytes"] for e in ours.manifest["shards"]) / ours.manifest["num_samples"]
    dl = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                     persistent_workers=args.workers > 0, prefetch_factor=4 if args.workers else None,
                                     drop_last=True)  # fmt: skip

    def theirs():
        for images, _ in dl:
            yield {"n": len(images), "bytes": int(len(images) * per_sample)}

    runs, med = interleaved({"cifar10_dali": lambda: _measure_loader(ours, args, "image"),
                             "pil_numpy": lambda: _measure_loop(theirs, args)}, args.rounds)  # fmt: skip
    ratio = med["cifar10_dali"] / med["pil_numpy"]
    print(f"cifar10_dali / PIL + NumPy DataLoader = {ratio:.2f}x ({med['cifar10_dali']:.0f} vs "
          f"{med['pil_numpy']:.0f} images/s, {args.workers} cores each; target >= 2)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "cifar10-loader-cpu", "cores": os.cpu_count(), "workers": args.workers,
                       "samples": len(dataset), "batch_size": args.batch_size, "runs": runs,
                       "median_images_per_s": med, "ratio": ratio}, f, indent=1)  # fmt: skip
    return 0
