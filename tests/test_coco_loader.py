"""`coco_dali` on the generated COCO (solid-colour polygons on noise, objects never overlapping): after the train
graph's crop and flip every box and every rasterized mask still covers its object's colour, keypoints follow with
left and right swapped; crowd objects are kept with their flag; eval maps back to the original pixels; captions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loaders.coco.graphs import FLIP_KEYPOINTS
from loaders.coco.masks import rasterize
from loaders.imagenet import IMAGENET_MEAN, IMAGENET_STD
from shards.manifest import read_manifest
from tests.raw import coco as raw
from tests.splits import read_samples

AWKWARD = {"000000000100", "000000000101"}  # the images carrying the awkward rows (not drawn in their pixels)
MEAN, STD = np.array(IMAGENET_MEAN) * 255, np.array(IMAGENET_STD) * 255


def pixels(batch) -> np.ndarray:
    return batch["image"].numpy().transpose(0, 2, 3, 1) * STD + MEAN


def test_rasterized_polygons_are_the_even_odd_fill_of_pixel_centres():
    import torch

    rng = np.random.default_rng(0)
    h, w = 40, 56
    py, px = np.mgrid[0:h, 0:w] + 0.5
    for _ in range(20):  # star-shaped polygons, some reaching outside the image
        n = int(rng.integers(3, 12))
        ang, rad = np.sort(rng.uniform(0, 2 * np.pi, n)), rng.uniform(3, 25, n)
        xy = np.stack([rng.uniform(0, w) + rad * np.cos(ang), rng.uniform(0, h) + rad * np.sin(ang)], 1)
        want = np.zeros((h, w), bool)
        for (x0, y0), (x1, y1) in zip(xy, np.roll(xy, -1, 0), strict=True):
            if y0 != y1:
                want ^= (py >= min(y0, y1)) & (py < max(y0, y1)) & (x0 + (py - y0) * (x1 - x0) / (y1 - y0) < px)
        # two objects: the polygon alone, and the polygon twice (an object's polygons are united, not xor-ed)
        polys = torch.tensor([[[0, 0, n], [1, 0, n], [1, n, 2 * n], [-1, -1, -1]]], dtype=torch.int32)
        verts = torch.tensor(np.concatenate([xy, xy])[None] / [w, h], dtype=torch.float32)
        got = rasterize(polys, verts, 3, h, w, torch.tensor([[w, h]])).numpy()[0]
        assert np.array_equal(got[0], want) and np.array_equal(got[1], want) and not got[2].any()


def test_train_crops_keep_every_box_and_mask_on_its_colour(coco_splits):
    from loaders import coco_dali

    split = coco_splits["folders"] / "train"
    ids = read_manifest(str(split))["category_ids"]
    size = 96
    loader = coco_dali(str(split), batch_size=2, task="instance", image_size=size, device="cpu", seed=5,
                       return_keys=True)  # fmt: skip
    checked = cropped = 0
    for _ in range(6):  # epochs: different crops and flips
        for batch in loader:
            img = pixels(batch)
            for j, key in enumerate(batch["key"]):
                n = int(batch["num_boxes"][j])
                assert (batch["labels"][j][n:] == -1).all() and not batch["masks"][j][n:].any()
                if key in AWKWARD:
                    continue
                for o in range(n):
                    colour = np.array(raw.COLOURS[ids[int(batch["labels"][j][o])]])
                    mask = batch["masks"][j][o].numpy()
                    x0, y0, x1, y1 = (batch["boxes"][j][o].numpy() * size).tolist()
                    assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
                    cropped += x0 == 0 or y0 == 0 or x1 == size or y1 == size
                    if mask.sum() < 12:
                        continue  # cropped to a sliver: mostly resampling blur
                    near = np.abs(img[j] - colour).max(axis=2) < 60
                    assert near[mask].mean() > 0.9, (key, o)  # the mask lies on the object ...
                    ys, xs = np.nonzero(mask)  # ... within its box ...
                    assert x0 - 1 <= xs.min() and xs.max() + 0.5 <= x1 + 1 and y0 - 1 <= ys.min() <= ys.max() <= y1
                    inner = near[int(y0) + 2 : int(y1) - 2, int(x0) + 2 : int(x1) - 2]
                    covered = mask[int(y0) + 2 : int(y1) - 2, int(x0) + 2 : int(x1) - 2]
                    assert covered[inner].mean() > 0.9, (key, o)  # ... and covers the object's pixels in it
                    checked += 1
    assert checked > 60 and cropped > 5


def test_keypoints_follow_the_crop_and_flip_with_left_and_right_swapped(coco_splits):
    from loaders import coco_dali

    split = coco_splits["folders"] / "train"
    size = 96
    loader = coco_dali(str(split), batch_size=2, task="keypoints", image_size=size, device="cpu", seed=9)
    grid = np.array([((k % 4) + 0.5) / 4 for k in range(17)])  # where tests/raw/coco.py puts keypoint k in its box
    flipped = {False: 0, True: 0}
    for _ in range(6):
        for batch in loader:
            img = pixels(batch)
            for j in range(len(img)):
                for o in range(int(batch["num_boxes"][j])):
                    kp = batch["keypoints"][j][o].numpy()
                    if batch["labels"][j][o] != 0:  # not a person: no keypoints
                        assert not kp.any()
                        continue
                    shown = kp[:, 2] > 0
                    assert ((kp[:, :2] >= 0) & (kp[:, :2] <= 1)).all() and not kp[~shown, :2].any()
                    for x, y in kp[shown, :2] * size:  # every keypoint shown lies on the person
                        px = img[j, min(int(y), size - 1), min(int(x), size - 1)]
                        assert np.abs(px - raw.COLOURS[1]).max() < 70, px
                    x0, y0, x1, y1 = batch["boxes"][j][o].numpy()
                    if shown.sum() < 8 or min(x0, y0) < 0.02 or max(x1, y1) > 0.98:
                        continue  # the crop cut the person: its keypoints are no longer on the grid of its box
                    rel = (kp[shown, 0] - x0) / (x1 - x0)
                    upright = np.allclose(rel, grid[shown], atol=0.04)
                    mirrored = np.allclose(rel, 1 - grid[list(FLIP_KEYPOINTS)][shown], atol=0.04)
                    assert upright != mirrored, rel  # one or the other: a flip swaps left and right
                    assert (kp[~shown, 2] == 0).all()
                    flipped[mirrored] += 1
    assert flipped[False] > 3 and flipped[True] > 3


def test_crowd_objects_are_kept_last_with_their_flag_and_never_constrain_the_crop(coco_splits):
    from loaders import coco_dali

    split = coco_splits["folders"] / "train"
    crowd_image = "000000000100"
    stored = read_samples(split)[crowd_image]
    boxes = np.frombuffer(stored["boxes"], "<f4").reshape(-1, 4)
    crowd = np.frombuffer(stored["iscrowd"], np.uint8)
    assert crowd.sum() == 1
    for train in (True, False):
        loader = coco_dali(str(split), batch_size=1, train=train, image_size=64, device="cpu", return_keys=True)
        for _ in range(4 if train else 1):
            for batch in loader:
                if batch["key"][0] != crowd_image:
                    continue
                n = int(batch["num_boxes"][0])
                assert batch["iscrowd"][0][:n].tolist() == [0] * (n - 1) + [1]  # kept, last, flagged
                if not train:  # eval: every object as stored, crowd last
                    want = np.concatenate([boxes[crowd == 0], boxes[crowd == 1]])
                    assert np.array_equal(batch["boxes"][0][:n].numpy(), want)


def test_eval_maps_predictions_back_to_original_pixels_and_masks_match_pycocotools(coco_splits):
    from pycocotools import mask as coco_mask

    from loaders import coco_dali

    split = coco_splits["folders"] / "validation"
    samples = read_samples(split)
    # image_size 120 = the images' height: scale 1, so the masks compare with pycocotools' at the original size
    loader = coco_dali(str(split), batch_size=2, task="instance", train=False, image_size=120, max_size=200,
                       device="cpu", return_keys=True, drop_last=False)  # fmt: skip
    seen = 0
    for batch in loader:
        assert batch["image"].shape[-2:] == (200, 200)
        for j, key in enumerate(batch["key"]):
            info = json.loads(samples[key]["json"])
            h, w = info["image"]["height"], info["image"]["width"]
            assert batch["size"][j].tolist() == [h, w] and batch["resized"][j].tolist() == [120, 160]
            assert batch["scale"][j].tolist() == [1.0, 1.0]
            assert not batch["image"][j][:, 120:, :].any() and not batch["image"][j][:, :, 160:].any()  # padding
            for o, ann in enumerate(info["annotations"]):
                want = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(ann["segmentation"], h, w)))
                got = batch["masks"][j][o][:h, :w].numpy()
                assert (got & (want > 0)).sum() / (got | (want > 0)).sum() > 0.9
                assert not batch["masks"][j][o][h:].any()
            seen += 1
    assert seen == len(samples)


def test_mid_epoch_resume_gives_the_same_crops_flips_and_masks(coco_splits):
    import torch

    from loaders import coco_dali

    kw = dict(batch_size=2, task="instance", image_size=64, device="cpu", seed=5, return_keys=True)
    a = coco_dali(str(coco_splits["folders"] / "train"), **kw)
    it = iter(a)
    next(it)
    state = a.state_dict()
    expected = list(it)
    b = coco_dali(str(coco_splits["folders"] / "train"), **kw)
    b.load_state_dict(state)
    got = list(b)
    assert len(got) == len(expected) == len(a) - 1
    for x, y in zip(got, expected, strict=True):
        assert x["key"] == y["key"] and all(torch.equal(x[k], y[k]) for k in x if k != "key")


def test_captions_and_tokens(coco_splits):
    from loaders import coco_dali

    split = coco_splits["folders"] / "validation"
    samples = read_samples(split)
    tokenizer = lambda text: [len(word) for word in text.split()]  # noqa: E731
    loader = coco_dali(str(split), batch_size=2, task="captions", train=False, image_size=32, device="cpu",
                       tokenizer=tokenizer, return_keys=True)  # fmt: skip
    for batch in loader:
        assert batch["image"].shape == (2, 3, 32, 32)
        for j, key in enumerate(batch["key"]):
            want = [c["caption"] for c in json.loads(samples[key]["json"])["captions"]]
            assert batch["captions"][j] == want
            assert batch["lengths"][j].tolist() == [len(tokenizer(c)) for c in want]
            assert batch["tokens"][j][0][: len(tokenizer(want[0]))].tolist() == tokenizer(want[0])


def test_a_task_the_split_cannot_serve_is_a_clear_error(coco_splits, tmp_path):
    from loaders import coco_dali

    with pytest.raises(ValueError, match="task must be one of"):
        coco_dali(str(coco_splits["folders"] / "train"), task="panoptic", device="cpu")
    m = read_manifest(str(coco_splits["folders"] / "train"))
    assert "keypoints" in m["fields"]
    tfds = tmp_path / "tfds"  # TFDS's fake COCO has no person_keypoints and no captions JSON
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "pipelines", "coco", "--input", str(raw.scaled_tfds(tmp_path / "raw")), "--output", str(tfds),
           "--splits", "validation", "--max-bad-fraction", "0.8", "--no-progress"]  # fmt: skip
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    lacks = r"no field\(s\) \['keypoints'\].*task='keypoints' needs them \(its job saw no person_keypoints"
    with pytest.raises(ValueError, match=lacks):
        coco_dali(str(tfds / "validation"), batch_size=1, task="keypoints", device="cpu")
    with pytest.raises(ValueError, match=r"task='captions' needs captions, and its job saw no captions_\*\.json"):
        coco_dali(str(tfds / "validation"), batch_size=1, task="captions", device="cpu")
