"""Photo-like JPEGs for tests, benchmarks and demos: crops of the photos scikit-image ships (never downloaded).

Needs Pillow and scikit-image (`pip install '.[dev]'`); both are imported only when a photo is asked for.
"""

from __future__ import annotations

import io

import numpy as np

__all__ = ["source_photos", "photo_jpeg", "write_sample_folder"]

_FILES = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "ihc.png",
)
_cache: list[np.ndarray] = []


def source_photos() -> list[np.ndarray]:
    """RGB uint8 photos bundled with scikit-image (loaded from the installed package, never fetched)."""
    if not _cache:
        import os

        try:
            import skimage
            from PIL import Image
        except ImportError as e:
            raise ImportError("photo-like sample data needs `pip install pillow scikit-image`") from e

        folder = os.path.join(os.path.dirname(skimage.__file__), "data")
        for name in _FILES:
            with Image.open(os.path.join(folder, name)) as im:
                _cache.append(np.asarray(im.convert("RGB")))
    return _cache


def photo_jpeg(i: int, *, size: tuple[int, int] = (500, 375), quality: int = 90) -> bytes:
    """The i-th photo-like JPEG: a seeded crop of a bundled photo, resized to `size` (w, h), baseline."""
    from PIL import Image

    photos = source_photos()
    rng = np.random.default_rng(i)
    img = photos[i % len(photos)]
    h, w = img.shape[:2]
    ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    crop = Image.fromarray(img[y : y + ch, x : x + cw]).resize(size, Image.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_sample_folder(folder: str, count: int, *, size: tuple[int, int] = (500, 375)) -> int:
    """Write `count` samples `sample-NNNNN.jpg` + `.cls` (label = which source photo) into `folder`."""
    import os

    os.makedirs(folder, exist_ok=True)
    n = len(source_photos())
    for i in range(count):
        stem = os.path.join(folder, f"sample{i:05d}")
        with open(stem + ".jpg", "wb") as f:
            f.write(photo_jpeg(i, size=size))
        with open(stem + ".cls", "w") as f:
            f.write(str(i % n))
    return count


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m shards.photos", description="write a folder of photo-like samples")
    p.add_argument("folder")
    p.add_argument("--count", type=int, default=200)
    args = p.parse_args(argv)
    write_sample_folder(args.folder, args.count)
    print(f"wrote {args.count} samples (.jpg + .cls) to {args.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
