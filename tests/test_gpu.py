"""The GPU path of every loader (marker `gpu`; skipped without CUDA): the eval graphs on the GPU equal the CPU
graphs key by key, train batches arrive on the GPU with the right shapes and dtypes, resume is exact, batches a
caller keeps are never overwritten (the DLPack hand-off is stream-safe), and multi-hot labels and the FMA mel are
right on the device.

Splits are written straight with `shards/` (`infra/gpu/splits.py`), so this module runs where Beam is not
installed (the GPU machine); the jobs that write the same format are covered by the CPU suite.
"""

from __future__ import annotations

import numpy as np
import pytest

from infra.gpu import splits
from tests.devices import GPU, on_gpu

pytest.importorskip("nvidia.dali", reason="DALI is not installed (pip install '.[dali]')")
torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")

pytestmark = pytest.mark.gpu

# Tolerances of GPU against CPU output. Images, in pixel levels (0-255) after undoing the normalization: nvJPEG's
# IDCT and chroma upsampling differ from libjpeg-turbo's by a level or two, and by more on a few edge pixels.
IMAGE_LEVELS = (1.5, 12.0)  # mean, 99th percentile
MEL_DB = (0.01, 0.05)  # float32 FFTs on two devices: mean, 99th percentile, in dB
FEATURES = 1e-5  # youtube8m dequantization: the same float arithmetic on both devices


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-splits")
    urls = {
        "imagenet": str(root / "imagenet"),
        "openimages": str(root / "openimages"),
        "video": str(root / "video"),
        "frame": str(root / "frame"),
        "fma": str(root / "fma"),
        "coco": str(root / "coco"),
    }
    splits.write_imagenet(urls["imagenet"], 48, shards=4)
    splits.write_openimages(urls["openimages"], 32, shards=4)
    splits.write_youtube8m(urls["video"], 600, level="video", shards=4)
    splits.write_youtube8m(urls["frame"], 24, level="frame", shards=4)
    splits.write_fma(urls["fma"], 8, seconds=6.0, shards=2)
    splits.write_coco(urls["coco"], 24, shards=3)
    return urls


def _make(name: str, url: str, device: str, **kw):
    from loaders import coco_dali, fma_dali, imagenet_dali, openimages_dali, youtube8m_dali

    common = dict(device=device, return_keys=True, num_threads=2, **kw)
    if name == "imagenet":
        return imagenet_dali(url, batch_size=8, image_size=64, **common)
    if name == "openimages":
        return openimages_dali(url, batch_size=8, image_size=96, **common)
    if name == "classification":
        return openimages_dali(url, batch_size=8, task="classification", image_size=64, **common)
    if name == "coco":  # instance: boxes, polygons and the masks torch fills on the device
        return coco_dali(url, batch_size=4, task="instance", image_size=96, max_size=128, **common)
    if name in ("video", "frame"):
        return youtube8m_dali(url, batch_size=16 if name == "video" else 4, **common)
    return fma_dali(url, batch_size=4, clip_seconds=4.0, n_mels=64, **common)


def _by_key(loader) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for batch in loader:
        for j, key in enumerate(batch["key"]):
            out[key] = {k: v[j].cpu().numpy() for k, v in batch.items() if k != "key"}
    return out


def _url(data, name: str) -> str:
    return data["openimages" if name == "classification" else name]


@pytest.mark.parametrize("name", ["imagenet", "openimages", "video", "frame", "fma", "coco"])
def test_eval_graph_on_the_gpu_equals_the_cpu_graph(data, name):
    kw = dict(train=False, drop_last=False)
    gpu, cpu = _by_key(_make(name, _url(data, name), GPU, **kw)), _by_key(_make(name, _url(data, name), "cpu", **kw))
    assert gpu.keys() == cpu.keys() and len(gpu) > 0
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None] * 255
    for key in cpu:
        for out, want in cpu[key].items():
            got = gpu[key][out]
            assert got.shape == want.shape and got.dtype == want.dtype, (key, out)
            if out == "image":
                levels = np.abs(got - want) * std
                assert levels.mean() <= IMAGE_LEVELS[0] and np.percentile(levels, 99) <= IMAGE_LEVELS[1], (
                    key,
                    levels.mean(),
                    np.percentile(levels, 99),
                )
            elif out == "masks":  # the same fill on two devices: edge pixels may round the other way
                assert (got != want).mean() <= 0.002, (key, (got != want).mean())
            elif out == "mel":
                diff = np.abs(got - want)
                assert diff.mean() <= MEL_DB[0] and np.percentile(diff, 99) <= MEL_DB[1], (key, diff.mean())
            elif got.dtype.kind == "f":
                np.testing.assert_allclose(got, want, atol=FEATURES, err_msg=f"{key} {out}")
            else:
                assert np.array_equal(got, want), (key, out)


SHAPES = {  # per loader: output -> (dtype, shape after the batch dimension)
    "imagenet": {"image": (torch.float32, (3, 64, 64)), "label": (torch.int64, ())},
    "openimages": {"image": (torch.float32, (3, 96, 96)), "num_boxes": (torch.int32, ())},
    "classification": {"image": (torch.float32, (3, 64, 64)), "target": (torch.float32, (601,))},
    "video": {"rgb": (torch.float32, (1024,)), "audio": (torch.float32, (128,)), "labels": (torch.float32, (3862,))},
    "frame": {"rgb": (torch.float32, (300, 1024)), "num_frames": (torch.int32, ()), "labels": (torch.float32, (3862,))},
    "fma": {"mel": (torch.float32, (64, 173)), "label": (torch.int64, ()), "genres": (torch.float32, (163,))},
    "coco": {"image": (torch.float32, (3, 96, 96)), "num_boxes": (torch.int32, ()), "num_polygons": (torch.int32, ())},
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_train_batches_are_on_the_gpu_with_the_right_shapes(data, name):
    loader = _make(name, _url(data, name), GPU, train=True)
    n = 0
    for batch in loader:
        for out, (dtype, shape) in SHAPES[name].items():
            t = batch[out]
            assert on_gpu(t) and t.dtype == dtype and tuple(t.shape[1:]) == shape, (out, t.device, t.dtype, t.shape)
            assert t.shape[0] == loader.batch_size
        if name == "coco":
            assert on_gpu(batch["masks"]) and batch["masks"].shape == (*batch["boxes"].shape[:2], 96, 96)
        n += 1
    assert n == len(loader) > 0


@pytest.mark.parametrize("name", ["imagenet", "openimages", "frame", "fma", "coco"])
def test_mid_epoch_resume_gives_identical_gpu_batches(data, name):
    kw = dict(train=True, seed=5)
    if name == "frame":
        kw["frame_sampling"] = "random"
    a = _make(name, _url(data, name), GPU, **kw)
    it = iter(a)
    next(it)
    state = a.state_dict()
    expected = list(it)
    b = _make(name, _url(data, name), GPU, **kw)
    b.load_state_dict(state)
    got = list(b)
    assert len(got) == len(expected) > 0
    for x, y in zip(got, expected, strict=True):
        assert x["key"] == y["key"]
        for out in x:
            if out != "key":
                assert torch.equal(x[out], y[out]), out


def test_batches_a_caller_keeps_stay_unchanged(data):
    """Each batch is cloned on torch's stream the moment it arrives; after the epoch (and a second one, while
    DALI reuses its memory pool) every kept batch must still equal its clone."""
    loader = _make("imagenet", data["imagenet"], GPU, train=True)
    kept, clones = [], []
    for _ in range(2):
        for batch in loader:
            kept.append(batch)
            clones.append({k: v.clone() for k, v in batch.items() if k != "key"})
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    assert len(kept) == 2 * len(loader)
    for batch, clone in zip(kept, clones, strict=True):
        for k, v in clone.items():
            assert torch.equal(batch[k], v), k
    # and the images are real pixels, not a zeroed or shared buffer
    assert len({float(b["image"].sum()) for b in kept}) == len(kept)


def test_multi_hot_labels_on_the_device_are_the_class_ids(data):
    import pyarrow as pa

    from shards.manifest import read_manifest

    ids = {}
    for entry in read_manifest(data["video"])["shards"]:
        table = pa.ipc.open_file(pa.memory_map(f"{data['video']}/{entry['path']}")).read_all()
        ids.update(zip(table.column("id").to_pylist(), table.column("labels").to_pylist(), strict=True))
    for batch in _make("video", data["video"], GPU, train=False):
        assert on_gpu(batch["labels"])
        for j, key in enumerate(batch["key"]):
            assert torch.nonzero(batch["labels"][j]).flatten().tolist() == sorted(ids[key])
    from shards.wds import iter_samples

    truth = {}
    for entry in read_manifest(data["openimages"])["shards"]:
        with open(f"{data['openimages']}/{entry['path']}", "rb") as f:
            for key, s in iter_samples(f):
                truth[key] = sorted(np.frombuffer(s["imagelabels"], "<i4").tolist())
    for batch in _make("classification", data["openimages"], GPU, train=False):
        assert on_gpu(batch["target"])
        for j, key in enumerate(batch["key"]):
            assert torch.nonzero(batch["target"][j]).flatten().tolist() == truth[key]


def test_fma_mel_on_the_gpu_matches_numpy(data):
    """The mel of each clip's centred 4 s, computed on the GPU, equals NumPy's on the same samples."""
    from loaders.fma import log_mel

    rate = 22050
    for batch in _make("fma", data["fma"], GPU, train=False, drop_last=False):
        assert on_gpu(batch["mel"]) and on_gpu(batch["genres"])
        for j, key in enumerate(batch["key"]):
            x = splits.fma_clip(int(key), 6.0, rate).astype(np.float32) / 32768
            clip = 4 * rate
            start = (len(x) - clip) // 2
            ref = log_mel(x[start : start + clip], rate, n_fft=2048, hop=512, n_mels=64, top_db=80.0)
            diff = np.abs(batch["mel"][j].cpu().numpy() - ref)
            assert diff.mean() <= 0.005 and np.percentile(diff, 99) <= 0.01, (key, diff.mean())
