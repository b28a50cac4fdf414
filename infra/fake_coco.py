"""A COCO 2017 split of any size in the official layout, for the benchmarks (`python -m pipelines.bench_coco`,
`python -m loaders.bench coco`): `<root>/train2017/*.jpg` and `<root>/annotations/instances_train2017.json` with
COCO's 80 category ids and polygon annotations of 24 vertices (COCO's average), spread at random over the images.

Images are one tiny JPEG (what the job's memory and the loaders' start-up measure is the annotations) or, with
`photos=True`, photo-like 640 x 480 JPEGs (`shards.photos`: what decoding costs)."""

from __future__ import annotations

import io
import json
import os

__all__ = ["write_coco"]


def write_coco(root: str, images: int, annotations: int, *, photos: bool = False, seed: int = 0) -> int:
    """The layout under `root` (reused when present); returns the JSON's size in bytes."""
    import numpy as np
    from PIL import Image

    from infra.photos import photo_jpeg

    ann_dir, img_dir = os.path.join(root, "annotations"), os.path.join(root, "train2017")
    path = os.path.join(ann_dir, "instances_train2017.json")
    if os.path.exists(path):
        return os.path.getsize(path)
    os.makedirs(ann_dir, exist_ok=True)
    os.makedirs(img_dir, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    for i in range(images):
        with open(os.path.join(img_dir, f"{i + 1:012d}.jpg"), "wb") as f:
            f.write(photo_jpeg(i, size=(640, 480)) if photos else jpeg)
    gaps = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}  # COCO's 80 used ids among 1..90
    categories = [{"id": i, "name": f"class {i}", "supercategory": "thing"} for i in range(1, 91) if i not in gaps]
    rng = np.random.default_rng(seed)
    cats = [c["id"] for c in categories]
    with open(path + ".part", "w") as f:
        f.write('{"info": {"year": 2017}, "licenses": [], "images": [')
        f.write(",".join(json.dumps({"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": 640, "height": 480,
                                     "license": 1, "coco_url": "", "date_captured": ""}) for i in range(images)))  # fmt: skip
        f.write('], "annotations": [')
        for a in range(annotations):
            x, y = rng.uniform(0, 500), rng.uniform(0, 380)
            poly = np.round(np.column_stack([x + rng.uniform(0, 120, 24), y + rng.uniform(0, 90, 24)]), 2).ravel()
            ann = {"id": a + 1, "image_id": int(rng.integers(1, images + 1)), "category_id": int(rng.choice(cats)),
                   "segmentation": [poly.tolist()], "area": 5000.0, "bbox": [round(x, 2), round(y, 2), 120.0, 90.0],
                   "iscrowd": 0}  # fmt: skip
            f.write(("," if a else "") + json.dumps(ann))
        f.write('], "categories": ' + json.dumps(categories) + "}")
    os.replace(path + ".part", path)  # complete, or absent: an interrupted run is not reused
    return os.path.getsize(path)


def main(argv: list[str] | None = None) -> int:
    from shards.cli import OneLineParser

    p = OneLineParser(prog="python -m infra.fake_coco", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("root", help="folder to write train2017/ and annotations/ into (reused when present)")
    p.add_argument("--images", type=int, default=5000, help="image records and files (default 5000)")
    p.add_argument("--annotations", type=int, default=36_000, help="instance annotations (default 36000)")
    p.add_argument("--photos", action="store_true", help="photo-like 640x480 JPEGs instead of one tiny JPEG")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.images < 1 or args.annotations < 0:
        p.error("--images must be at least 1 and --annotations at least 0")
    size = write_coco(args.root, args.images, args.annotations, photos=args.photos, seed=args.seed)
    print(f"{args.root}: {args.images} images, {args.annotations} annotations ({size / 1e6:.1f} MB of JSON)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
