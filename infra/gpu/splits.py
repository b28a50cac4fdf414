"""Splits of the five datasets in the shard format, written straight with `shards/` (no Beam, no audio codecs):
what the GPU tests and the device run read on a machine that has neither Beam nor PyAV.

The loaders only see the shard format, so these splits exercise them exactly as a job's output does; the jobs
themselves are covered by the CPU suite. Images are ImageNet-like: 400-500 px wide, 333-500 px high, cropped from
the photos scikit-image ships at their own scale, with sensor-like grain, baseline JPEG at quality 97 (mean about
110 KB, as ImageNet's train images). Audio is WAV (16-bit mono), which DALI decodes and the stdlib writes.

    python -m infra.gpu.splits OUT [--images N] [--videos N] [--frames N] [--clips N] [--workers N]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import wave
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from shards.manifest import build_manifest, write_manifest
from shards.publish import write_arrow_shard, write_tar_shard

__all__ = ["imagenet_jpeg", "main", "write_coco", "write_fma", "write_imagenet", "write_openimages", "write_youtube8m"]

NUM_CLASSES = {"imagenet": 1000, "openimages": 601, "youtube8m": 3862, "coco": 80}
COCO_FIELDS = ("boxes", "labels", "iscrowd", "area", "polygons", "vertices", "keypoints")
FMA_TOP = 16  # FMA's top-level genres
FMA_GENRES = 163


def imagenet_jpeg(i: int) -> tuple[bytes, tuple[int, int]]:
    """The i-th ImageNet-like JPEG (see the module docstring) and its (width, height)."""
    from PIL import Image

    from infra.photos import source_photos

    rng = np.random.default_rng([i, 97])
    w, h = int(rng.integers(400, 501)), int(rng.integers(333, 501))
    img = source_photos()[i % len(source_photos())]
    src = Image.fromarray(img)
    scale = max(w / src.width, h / src.height, rng.uniform(0.6, 1.0))
    if scale != 1:
        src = src.resize((max(w, round(src.width * scale)), max(h, round(src.height * scale))), Image.BILINEAR)
    x, y = int(rng.integers(0, src.width - w + 1)), int(rng.integers(0, src.height - h + 1))
    pixels = np.asarray(src.crop((x, y, x + w, y + h)), dtype=np.int16)
    pixels = np.clip(pixels + rng.normal(0, 4, pixels.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=97)
    return buf.getvalue(), (w, h)


def _spans(n: int, shards: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, shards + 1).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges.tolist())]


def _image_shard(args: tuple[str, str, int, int, int]) -> dict[str, Any]:
    dataset, url, index, lo, hi = args
    samples = []
    for k in range(lo, hi):
        rng = np.random.default_rng([k, 1])
        jpg, _ = imagenet_jpeg(k)
        fields: dict[str, bytes] = {"jpg": jpg}
        if dataset == "imagenet":
            fields["cls"] = b"%d" % (k % NUM_CLASSES["imagenet"])
        elif dataset == "coco":
            fields |= _coco_objects(rng)
        else:  # Open Images: normalized [xmin, ymin, xmax, ymax] boxes, their labels, human image labels
            n = int(rng.integers(1, 6))
            lo_xy = rng.uniform(0, 0.6, (n, 2))
            boxes = np.concatenate([lo_xy, lo_xy + rng.uniform(0.1, 0.4, (n, 2))], axis=1).clip(0, 1)
            fields["boxes"] = boxes.astype("<f4").tobytes()
            fields["labels"] = rng.integers(0, NUM_CLASSES["openimages"], n).astype("<i4").tobytes()
            fields["imagelabels"] = np.unique(rng.integers(0, NUM_CLASSES["openimages"], 3)).astype("<i4").tobytes()
        fields["json"] = json.dumps({"index": k}).encode()
        samples.append((f"{dataset[:2]}{k:08d}", fields))
    return write_tar_shard(url, index, samples)


def _coco_objects(rng: np.random.Generator) -> dict[str, bytes]:
    """COCO's numeric fields (`pipelines/coco/samples.py`): 0-8 objects, a quadrilateral each inside its box, the
    last sometimes a crowd without polygons, keypoints on some."""
    n = int(rng.integers(0, 9))
    lo = rng.uniform(0, 0.6, (n, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(0.1, 0.4, (n, 2))], axis=1).clip(0, 1)
    crowd = np.zeros(n, np.uint8)
    if n and rng.random() < 0.3:
        crowd[-1] = 1
    polygons, vertices = [], []
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        if not crowd[i]:
            polygons.append((i, 4 * len(polygons), 4 * len(polygons) + 4))
            vertices += [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    kp = np.zeros((n, 17, 3), np.float32)
    for i in np.flatnonzero(rng.random(n) < 0.5):
        kp[i, :, 0] = rng.uniform(boxes[i, 0], boxes[i, 2], 17)
        kp[i, :, 1] = rng.uniform(boxes[i, 1], boxes[i, 3], 17)
        kp[i, :, 2] = rng.integers(0, 3, 17)
    return {"boxes": boxes.astype("<f4").tobytes(), "labels": rng.integers(0, 80, n).astype("<i4").tobytes(),
            "iscrowd": crowd.tobytes(), "area": rng.uniform(100, 5000, n).astype("<f4").tobytes(),
            "polygons": np.array(polygons, "<i4").reshape(-1, 3).tobytes(),
            "vertices": np.array(vertices, "<f4").reshape(-1, 2).tobytes(), "keypoints": kp.astype("<f4").tobytes()}  # fmt: skip


def _write_images(dataset: str, url: str, n: int, shards: int, workers: int) -> dict[str, Any]:
    jobs = [(dataset, url, s, lo, hi) for s, (lo, hi) in enumerate(_spans(n, shards))]
    with ProcessPoolExecutor(workers) as pool:
        entries = list(pool.map(_image_shard, jobs))
    fields = {"jpg": "image/jpeg", "json": "meta"}
    if dataset == "coco":
        fields |= dict.fromkeys(COCO_FIELDS, "numeric")
    else:
        fields |= {"cls": "label"} if dataset == "imagenet" else {"boxes": "<f4", "labels": "<i4", "imagelabels": "<i4"}
    m = build_manifest(
        dataset=dataset,
        split="train",
        fields=fields,
        shards=entries,
        source={"url": "infra.gpu.splits", "inputs_seen": n},
        classes=[f"c{i}" for i in range(NUM_CLASSES[dataset])],
    )
    write_manifest(url, m)
    return m


def write_imagenet(url: str, n: int, *, shards: int = 16, workers: int = 1) -> dict[str, Any]:
    """An ImageNet split (`jpg`, `cls`, `json`) of `n` ImageNet-like photos."""
    return _write_images("imagenet", url, n, shards, workers)


def write_openimages(url: str, n: int, *, shards: int = 16, workers: int = 1) -> dict[str, Any]:
    """An Open Images split (`jpg`, `boxes`, `labels`, `imagelabels`, `json`) of `n` ImageNet-like photos."""
    return _write_images("openimages", url, n, shards, workers)


def write_coco(url: str, n: int, *, shards: int = 16, workers: int = 1) -> dict[str, Any]:
    """A COCO split (`jpg`, `json`, boxes, labels, crowd flags, polygons, keypoints) of `n` ImageNet-like photos."""
    return _write_images("coco", url, n, shards, workers)


def write_youtube8m(url: str, n: int, *, level: str = "video", shards: int = 8) -> dict[str, Any]:
    """A YouTube-8M split of `n` videos with the job's Arrow schema (frame level: 30-300 frames each)."""
    from pipelines.youtube8m import AUDIO, RGB, schema  # Beam-free at import

    rows_per = _spans(n, shards)
    entries = []
    for s, (lo, hi) in enumerate(rows_per):
        rng = np.random.default_rng([s, 8])
        rows = []
        for k in range(lo, hi):
            labels = np.unique(rng.integers(0, NUM_CLASSES["youtube8m"], int(rng.integers(1, 6)))).tolist()
            row: dict[str, Any] = {"id": f"v{k:07d}", "labels": labels}
            if level == "video":
                row["mean_rgb"] = rng.normal(0, 0.5, RGB).astype(np.float32)
                row["mean_audio"] = rng.normal(0, 0.5, AUDIO).astype(np.float32)
            else:
                frames = int(rng.integers(30, 301))
                row |= {"num_frames": frames, "rgb": rng.integers(0, 256, frames * RGB, dtype=np.uint8).tobytes()}
                row |= {"audio": rng.integers(0, 256, frames * AUDIO, dtype=np.uint8).tobytes()}
                row |= {k: None for k in ("segment_labels", "segment_start_times", "segment_end_times")}
                row["segment_scores"] = None
            rows.append(row)
        entries.append(write_arrow_shard(url, s, rows, schema=schema(level)))
    from shards.arrow import schema_to_json

    m = build_manifest(
        dataset="youtube8m",
        split="train",
        fields=dict(sorted(schema_to_json(schema(level)).items())),
        shards=entries,
        source={"url": "infra.gpu.splits", "inputs_seen": n},
        classes=[f"k{i}" for i in range(NUM_CLASSES["youtube8m"])],
        level=level,
        num_classes=NUM_CLASSES["youtube8m"],
    )
    write_manifest(url, m)
    return m


def _wav(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()


def fma_clip(k: int, seconds: float, rate: int) -> np.ndarray:
    """The k-th clip: a few decaying notes over soft noise, as int16 (music-like, so the mel has structure)."""
    rng = np.random.default_rng([k, 5])
    t = np.arange(round(seconds * rate)) / rate
    x = 0.02 * rng.normal(size=t.size)
    ring = round(1.5 * rate)  # each note rings 1.5 s
    for start in range(0, t.size, rate // 2):
        f = 110 * 2 ** (rng.integers(0, 36) / 12)
        u = t[start : start + ring] - t[start]
        x[start : start + ring] += 0.3 * np.exp(-u * 3) * np.sin(2 * np.pi * f * u)
    return (np.clip(x, -1, 1) * 32767).astype(np.int16)


def write_fma(url: str, n: int, *, seconds: float = 30.0, rate: int = 22050, shards: int = 8) -> dict[str, Any]:
    """An FMA split of `n` WAV clips (`wav`, `cls`, `genres`, `json`) as `python -m pipelines fma --codec wav`
    writes them."""
    entries = []
    for s, (lo, hi) in enumerate(_spans(n, shards)):
        samples = []
        for k in range(lo, hi):
            rng = np.random.default_rng([k, 6])
            genres = np.unique(rng.integers(0, FMA_GENRES, int(rng.integers(1, 4)))).astype("<i4")
            fields = {"wav": _wav(fma_clip(k, seconds, rate), rate), "cls": b"%d" % (k % FMA_TOP)}
            fields |= {"genres": genres.tobytes(), "json": json.dumps({"track": k}).encode()}
            samples.append((f"{k:06d}", fields))
        entries.append(write_tar_shard(url, s, samples))
    m = build_manifest(
        dataset="fma",
        split="train",
        fields={"wav": "audio/wav", "cls": "label", "genres": "<i4", "json": "meta"},
        shards=entries,
        source={"url": "infra.gpu.splits", "inputs_seen": n},
        classes=[f"top{i}" for i in range(FMA_TOP)],
        audio={"codec": "wav", "sample_rate": rate, "channels": 1},
        genres=[{"id": i + 1, "title": f"g{i}"} for i in range(FMA_GENRES)],
    )
    write_manifest(url, m)
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.gpu.splits", description=__doc__.split("\n")[0])
    p.add_argument(
        "out", help="folder to write imagenet/, openimages/, coco/, youtube8m-video/, youtube8m-frame/, fma/ in"
    )
    p.add_argument("--images", type=int, default=16384, help="ImageNet images (default 16384, ~1.8 GB)")
    p.add_argument("--boxes-images", type=int, default=4096, help="Open Images images (default 4096)")
    p.add_argument("--coco-images", type=int, default=2048, help="COCO images (default 2048)")
    p.add_argument("--videos", type=int, default=200_000, help="YouTube-8M video-level rows (default 200000)")
    p.add_argument("--frames", type=int, default=2000, help="YouTube-8M frame-level videos (default 2000)")
    p.add_argument("--clips", type=int, default=512, help="FMA 30 s clips (default 512)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes writing image shards")
    a = p.parse_args(argv)
    join = lambda name: os.path.join(a.out, name, "train")  # noqa: E731
    write_imagenet(join("imagenet"), a.images, shards=max(8, a.images // 512), workers=a.workers)
    write_openimages(join("openimages"), a.boxes_images, shards=max(8, a.boxes_images // 512), workers=a.workers)
    write_coco(join("coco"), a.coco_images, shards=max(4, a.coco_images // 512), workers=a.workers)
    write_youtube8m(join("youtube8m-video"), a.videos, level="video", shards=16)
    write_youtube8m(join("youtube8m-frame"), a.frames, level="frame", shards=16)
    write_fma(join("fma"), a.clips, shards=8)
    print(f"splits written under {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
