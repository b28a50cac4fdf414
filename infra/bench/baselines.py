"""PIL / pyarrow + torch DataLoader baselines for the benchmark (`python -m loaders.bench`): what people write today, doing
the same work as a loader's train graph, over the same shards.

Detection (Open Images): decode with PIL; a bbox-aware random crop drawn like DALI's `random_bbox_crop` (scale
0.3-1, aspect 0.5-2, an IoU threshold from {none, 0.1, 0.3, 0.5, 0.7, 0.9} with at least one box meeting it, up
to 50 attempts, else the whole image); boxes clipped to the crop and moved into its frame, dropped when their
centre leaves it; a horizontal flip of pixels and boxes; resize to S x S; normalize; boxes padded per batch.
"""

from __future__ import annotations

import io
import math
import random

import numpy as np
import torch

from loaders.cache import ShardCache
from loaders.imagenet import IMAGENET_MEAN, IMAGENET_STD
from loaders.reading import SampleReader

__all__ = ["arrow_feature_batches", "audio_batches", "bbox_crop", "detection_batches", "imagenet_batches"]

MEAN = np.array(IMAGENET_MEAN, np.float32) * 255
STD = np.array(IMAGENET_STD, np.float32) * 255
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


class _PilShards(torch.utils.data.IterableDataset):
    """A torch IterableDataset over a split's shards, samples shuffled and split among the DataLoader workers;
    subclasses turn one sample into tensors in `make`."""

    fields: tuple[str, ...] = ()

    def __init__(self, split_url: str, image_size: int, epochs: int = 1000):
        super().__init__()
        from shards.manifest import read_manifest

        self.manifest = read_manifest(split_url)
        self.split_url, self.image_size, self.epochs = split_url, image_size, epochs

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        reader = SampleReader(self.split_url, self.manifest, ShardCache(None, 1 << 40))
        rng = random.Random(wid)
        samples = [(s, i) for s, n in enumerate(reader.sizes()) for i in range(n)]
        for _ in range(self.epochs):
            rng.shuffle(samples)
            for s, i in samples[wid::nw]:
                yield self.make(reader.read(s, i, self.fields), rng)

    def make(self, fields: list[bytes], rng: random.Random):
        raise NotImplementedError


def _batches(dataset: torch.utils.data.IterableDataset, batch_size: int, workers: int, collate):
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )
    return lambda: iter(loader)


def _normalized(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(((arr - MEAN) / STD).transpose(2, 0, 1)))


def _random_resized_crop(w: int, h: int, rng: random.Random) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop parameters (scale 0.08-1, ratio 3/4-4/3), with its centre fallback."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch
    s = min(w, h)
    return (w - s) // 2, (h - s) // 2, s, s


class _PilImageNet(_PilShards):
    """PIL decode + random-resized-crop, resize, flip, normalize: the imagenet_dali train graph's work."""

    fields = ("jpg", "cls")

    def make(self, fields: list[bytes], rng: random.Random):
        from PIL import Image

        jpg, cls = fields
        S = self.image_size
        with Image.open(io.BytesIO(jpg)) as im:
            im = im.convert("RGB")
            x, y, cw, ch = _random_resized_crop(im.width, im.height, rng)
            arr = np.asarray(im.resize((S, S), Image.BILINEAR, box=(x, y, x + cw, y + ch)), dtype=np.float32)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        return _normalized(arr), int(cls), len(jpg)


def imagenet_batches(split_url: str, batch_size: int, workers: int, image_size: int):
    """A callable returning an iterator of {image, label, bytes} batches."""

    def collate(items):
        images, labels, sizes = zip(*items, strict=True)
        return {"image": torch.stack(images), "label": torch.tensor(labels), "bytes": sum(sizes)}

    return _batches(_PilImageNet(split_url, image_size), batch_size, workers, collate)


class _PilDetection(_PilShards):
    fields = ("jpg", "boxes", "labels")

    def make(self, fields: list[bytes], rng: random.Random):
        from PIL import Image

        jpg, raw_boxes, raw_labels = fields
        boxes = np.frombuffer(raw_boxes, "<f4").reshape(-1, 4)
        crop, boxes, _ = bbox_crop(boxes, np.frombuffer(raw_labels, "<i4"), rng)
        S = self.image_size
        with Image.open(io.BytesIO(jpg)) as im:
            im = im.convert("RGB")
            w, h = im.size
            box = (crop[0] * w, crop[1] * h, crop[2] * w, crop[3] * h)
            arr = np.asarray(im.resize((S, S), Image.BILINEAR, box=box), dtype=np.float32)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
            if len(boxes):
                boxes = np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)
        return _normalized(arr), torch.from_numpy(boxes.copy()), len(jpg)


def detection_batches(split_url: str, batch_size: int, workers: int, image_size: int):
    """A callable returning an iterator of {image, boxes (padded), n, bytes} batches."""

    def collate(items):
        images, boxes, sizes = zip(*items, strict=True)
        m = max((len(b) for b in boxes), default=0)
        padded = torch.zeros(len(boxes), m, 4)
        for j, b in enumerate(boxes):
            padded[j, : len(b)] = b
        return {"image": torch.stack(images), "boxes": padded, "n": len(images), "bytes": sum(sizes)}

    return _batches(_PilDetection(split_url, image_size), batch_size, workers, collate)


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


class _AudioShards(_PilShards):
    """soundfile decode, mono, a random crop, then a NumPy STFT -> mel -> dB (float32): the fma_dali train graph's
    work as a plain loop writes it."""

    fields = ("flac", "cls", "genres")

    def __init__(self, split_url: str, clip_seconds: float, n_mels: int, n_fft: int = 2048, hop: int = 512):
        super().__init__(split_url, 0)
        from loaders.fma import hann, mel_filters

        self.rate = int(self.manifest["audio"]["sample_rate"])
        self.fields = (self.manifest["audio"]["codec"], "cls", "genres")
        self.clip, self.n_fft, self.hop = round(clip_seconds * self.rate), n_fft, hop
        self.window = hann(n_fft)
        self.filters = mel_filters(self.rate, n_fft, n_mels).astype(np.float32)
        self.num_genres = len(self.manifest["genres"])

    def make(self, fields: list[bytes], rng: random.Random):
        import soundfile as sf

        audio, cls, genres = fields
        x, _ = sf.read(io.BytesIO(audio), dtype="float32", always_2d=True)
        x = x.mean(axis=1)
        start = rng.randint(0, max(0, len(x) - self.clip))
        x = x[start : start + self.clip]
        x = np.pad(x, (0, self.clip - len(x)))
        padded = np.pad(x, self.n_fft // 2, mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.n_fft)[:: self.hop]
        spec = np.fft.rfft(frames * self.window, axis=1)
        mel = self.filters @ (spec.real**2 + spec.imag**2).T.astype(np.float32)
        db = 10 * np.log10(np.maximum(mel / max(float(mel.max()), 1e-30), 1e-8))
        hot = np.zeros(self.num_genres, np.float32)
        hot[np.frombuffer(genres, "<i4")] = 1
        return torch.from_numpy(db.astype(np.float32)), int(cls), torch.from_numpy(hot), len(audio)


def audio_batches(split_url: str, batch_size: int, workers: int, clip_seconds: float, n_mels: int):
    """A callable returning an iterator of {mel, label, genres, n, bytes} batches."""

    def collate(items):
        mel, cls, hot, size = zip(*items, strict=True)
        n = len(items)
        return {"mel": torch.stack(mel), "label": torch.tensor(cls), "genres": torch.stack(hot), "n": n,
                "bytes": sum(size)}  # fmt: skip

    return _batches(_AudioShards(split_url, clip_seconds, n_mels), batch_size, workers, collate)
