"""PIL + torch DataLoader baselines for the benchmark (`python -m loaders.bench`): what people write today, doing
the same work as a loader's train graph, over the same shards.

Detection (Open Images): decode with PIL; a bbox-aware random crop drawn like DALI's `random_bbox_crop` (scale
0.3-1, aspect 0.5-2, an IoU threshold from {none, 0.1, 0.3, 0.5, 0.7, 0.9} with at least one box meeting it, up
to 50 attempts, else the whole image); boxes clipped to the crop and moved into its frame, dropped when their
centre leaves it; a horizontal flip of pixels and boxes; resize to S x S; normalize; boxes padded per batch.
"""

from __future__ import annotations

import io
import random

import numpy as np
import torch

from loaders.reading import SampleReader, ShardCache

__all__ = ["detection_batches", "bbox_crop", "arrow_feature_batches"]

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
THRESHOLDS = (None, 0.1, 0.3, 0.5, 0.7, 0.9)


def _iou(crop: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(crop[0], boxes[:, 0])
    y0 = np.maximum(crop[1], boxes[:, 1])
    x1 = np.minimum(crop[2], boxes[:, 2])
    y1 = np.minimum(crop[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / np.maximum(area(crop) + area(boxes) - inter, 1e-9)


def bbox_crop(boxes: np.ndarray, labels: np.ndarray, rng: random.Random):
    """(crop [x0, y0, x1, y1] normalized, boxes in the crop's frame, their labels)."""
    threshold = rng.choice(THRESHOLDS)
    crop = np.array([0, 0, 1, 1], np.float32)
    if threshold is not None and len(boxes):
        for _ in range(50):
            s = rng.uniform(0.3, 1.0)
            aspect = rng.uniform(0.5, 2.0)
            w, h = min(1.0, s * aspect**0.5), min(1.0, s / aspect**0.5)
            x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            cand = np.array([x, y, x + w, y + h], np.float32)
            if (_iou(cand, boxes) >= threshold).any():
                crop = cand
                break
    if not len(boxes):
        return crop, boxes, labels
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    keep = ((centre >= crop[:2]) & (centre <= crop[2:])).all(axis=1)
    size = crop[2:] - crop[:2]
    out = (np.clip(boxes[keep], np.tile(crop[:2], 2), np.tile(crop[2:], 2)) - np.tile(crop[:2], 2)) / np.tile(size, 2)
    return crop, out.astype(np.float32), labels[keep]


class _PilDetection(torch.utils.data.IterableDataset):
    def __init__(self, split_url: str, image_size: int, epochs: int = 1000):
        super().__init__()
        from shards.manifest import read_manifest

        self.manifest = read_manifest(split_url)
        self.split_url, self.image_size, self.epochs = split_url, image_size, epochs

    def __iter__(self):
        from PIL import Image

        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        reader = SampleReader(self.split_url, self.manifest, ShardCache(None, 1 << 40))
        rng = random.Random(wid)
        samples = [(s, i) for s, n in enumerate(reader.sizes()) for i in range(n)]
        S = self.image_size
        for _ in range(self.epochs):
            rng.shuffle(samples)
            for s, i in samples[wid::nw]:
                jpg, raw_boxes, raw_labels = reader.read(s, i, ["jpg", "boxes", "labels"])
                boxes = np.frombuffer(raw_boxes, "<f4").reshape(-1, 4)
                labels = np.frombuffer(raw_labels, "<i4")
                crop, boxes, labels = bbox_crop(boxes, labels, rng)
                with Image.open(io.BytesIO(jpg)) as im:
                    im = im.convert("RGB")
                    w, h = im.size
                    box = (crop[0] * w, crop[1] * h, crop[2] * w, crop[3] * h)
                    arr = np.asarray(im.resize((S, S), Image.BILINEAR, box=box), dtype=np.float32)
                if rng.random() < 0.5:
                    arr = arr[:, ::-1]
                    boxes = (
                        np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)
                        if len(boxes)
                        else boxes
                    )
                arr = ((arr - MEAN) / STD).transpose(2, 0, 1)
                yield torch.from_numpy(np.ascontiguousarray(arr)), torch.from_numpy(boxes.copy()), len(jpg)


def detection_batches(split_url: str, batch_size: int, workers: int, image_size: int):
    """A callable returning an iterator of {image, boxes (padded), num_boxes, bytes} batches."""

    def collate(items):
        images, boxes, sizes = zip(*items, strict=True)
        m = max((len(b) for b in boxes), default=0)
        padded = torch.zeros(len(boxes), m, 4)
        for j, b in enumerate(boxes):
            padded[j, : len(b)] = b
        return {"image": torch.stack(images), "boxes": padded, "n": len(images), "bytes": sum(sizes)}

    loader = torch.utils.data.DataLoader(
        _PilDetection(split_url, image_size),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )
    return lambda: iter(loader)


def arrow_feature_batches(split_url: str, batch_size: int, level: str, max_frames: int = 300, seed: int = 0):
    """YouTube-8M without DALI: shards in a shuffled order, each memory-mapped with pyarrow, rows in shuffled
    batches made into the loader's tensors with numpy (features, multi-hot labels; frame level dequantized and
    zero-padded to `max_frames`). The plain loop the loader is measured against."""
    import pyarrow as pa

    from shards import storage
    from shards.manifest import read_manifest

    manifest = read_manifest(split_url)
    classes = manifest["num_classes"]
    paths = [storage.local_path(storage.join(split_url, e["path"])) for e in manifest["shards"]]
    sizes = {p: e["num_bytes"] / max(1, e["num_samples"]) for p, e in zip(paths, manifest["shards"], strict=True)}
    rng = np.random.default_rng(seed)

    def multi_hot(col) -> np.ndarray:
        col = col.combine_chunks()
        offsets = col.offsets.to_numpy()
        hot = np.zeros((len(col), classes), np.float32)
        hot[np.repeat(np.arange(len(col)), np.diff(offsets)), col.values.to_numpy()] = 1
        return hot

    def batches():
        while True:
            for p in rng.permutation(paths).tolist():
                table = pa.ipc.open_file(pa.memory_map(p)).read_all()
                order = rng.permutation(table.num_rows)
                for lo in range(0, len(order), batch_size):
                    t = table.take(pa.array(order[lo : lo + batch_size]))
                    n = t.num_rows
                    batch = {"labels": torch.from_numpy(multi_hot(t.column("labels")))}
                    if level == "video":
                        for name, out in (("mean_rgb", "rgb"), ("mean_audio", "audio")):
                            v = t.column(name).combine_chunks().values.to_numpy()
                            batch[out] = torch.from_numpy(v.reshape(n, -1))
                    else:
                        frames = np.minimum(t.column("num_frames").to_numpy(), max_frames)
                        for name, width in (("rgb", 1024), ("audio", 128)):
                            padded = np.zeros((n, max_frames, width), np.float32)
                            for k, raw in enumerate(t.column(name).to_pylist()):
                                q = np.frombuffer(raw, np.uint8, count=frames[k] * width).reshape(-1, width)
                                np.multiply(q, np.float32(4 / 255), out=padded[k, : frames[k]])
                                padded[k, : frames[k]] += np.float32(4 / 512 - 2)
                            batch[name] = torch.from_numpy(padded)
                        batch["num_frames"] = torch.from_numpy(frames.astype(np.int32))
                    yield {"n": n, "bytes": int(n * sizes[p]), "batch": batch}

    return batches
