"""`python -m loaders.bench imagenet|openimages|youtube8m|fma`: our loader, the bare DALI graph, and a plain
baseline, on the same shards with the same number of CPU workers, in one run (`reading`: see loader_reading.py).

openimages: `openimages_dali(task="detection", train=True)` against the PIL detection baseline of
infra/bench/baselines.py (the same bbox-aware crop, box transforms, flip, resize and normalize); no bare-DALI run.

- loader: `imagenet_dali(train=True)` with `--workers` DALI threads.
- bare DALI: the same train graph fed by DALI's own `fn.readers.webdataset` (no Python source, no plan): what the
  loader's own overhead is measured against.
- baseline (`--baseline pil`): a torch DataLoader with `--workers` processes over the same shards, decoding with
  PIL and doing the same augmentation (random-resized-crop 0.08-1 / 3:4-4:3, resize, flip, normalize) in PIL and
  numpy; what people write today.

Each runs for `--seconds` after a short warm-up; images/s, MB/s (JPEG bytes consumed) and CPU use (cores busy,
from /proc for the whole process tree) are printed, with the ratios, to JSON and as a bar chart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import numpy as np

from shards.procs import tree_usage

__all__ = ["main"]


def _tree_cpu_seconds(root: int) -> float:
    return tree_usage(root)[1]


class _GpuSampler:
    """`nvidia-smi dmon -s u` in the background while a configuration is measured: the mean utilization of the SMs
    and of the hardware JPEG decoders (`jpg`), in percent; nothing where there is no nvidia-smi."""

    def __init__(self, device: str):
        import shutil
        import subprocess

        self.proc = None
        if device == "gpu" and shutil.which("nvidia-smi"):
            cmd = ["nvidia-smi", "dmon", "-s", "u", "-d", "1", "-i", "0"]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> dict[str, float]:
        if self.proc is None:
            return {}
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        lines = out.splitlines()
        header = next((ln.lstrip("#").split() for ln in lines if ln.startswith("# gpu")), [])
        rows = [ln.split() for ln in lines if ln.strip() and not ln.startswith("#")]
        means = {}
        for name in ("sm", "jpg", "dec"):
            if name in header:
                vals = [float(r[header.index(name)]) for r in rows if r[header.index(name)].replace(".", "").isdigit()]
                if vals:
                    means[f"{name}_util_pct"] = sum(vals) / len(vals)
        return means


def _measure(batches, seconds: float, warmup: float, nbytes_of, device: str = "cpu") -> dict[str, float]:
    """Images/s, MB/s and cores busy over `seconds` after `warmup`, iterating `batches` (restarted as needed);
    on the GPU also the SM and JPEG-engine utilization (`_GpuSampler`)."""
    it = batches()
    deadline = time.perf_counter() + warmup
    while time.perf_counter() < deadline:
        try:
            next(it)
        except StopIteration:
            it = batches()
    images = nbytes = 0
    sampler = _GpuSampler(device)
    cpu0, t0 = _tree_cpu_seconds(os.getpid()), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        try:
            b = next(it)
        except StopIteration:
            it = batches()
            continue
        n, size = nbytes_of(b)
        images += n
        nbytes += size
    dt = time.perf_counter() - t0
    cores = (_tree_cpu_seconds(os.getpid()) - cpu0) / dt
    out = {"images_per_s": images / dt, "MB_per_s": nbytes / dt / 1e6, "cores_busy": cores, "seconds": dt}
    return out | sampler.stop()


# ---------------------------------------------------------------- the bare DALI graph


def _bare_dali_batches(
    split_url: str,
    manifest: dict[str, Any],
    batch_size: int,
    workers: int,
    image_size: int,
    device: str,
    *,
    train: bool = True,
    hw_decoder_load: float | None = None,
):
    from nvidia.dali import fn, pipeline_def, types

    from loaders.imagenet import IMAGENET_MEAN, IMAGENET_STD
    from shards import storage

    tars = [storage.join(split_url, e["path"]) for e in manifest["shards"]]
    idxs = [storage.join(split_url, e["idx"]) for e in manifest["shards"]]

    @pipeline_def(batch_size=batch_size, num_threads=workers, device_id=0 if device == "gpu" else None, seed=0)
    def pipe():
        jpg, cls = fn.readers.webdataset(
            paths=tars, index_paths=idxs, ext=["jpg", "cls"], random_shuffle=True, name="r"
        )
        decoder = {"device": "mixed" if device == "gpu" else "cpu", "output_type": types.RGB}
        if hw_decoder_load is not None and device == "gpu":
            decoder["hw_decoder_load"] = hw_decoder_load
        if train:
            images = fn.decoders.image_random_crop(
                jpg, random_area=[0.08, 1.0], random_aspect_ratio=[3 / 4, 4 / 3], num_attempts=100, **decoder
            )
            images = fn.resize(images, resize_x=image_size, resize_y=image_size, antialias=True)
        else:
            images = fn.resize(fn.decoders.image(jpg, **decoder), resize_shorter=round(image_size / 0.875))
        images = fn.crop_mirror_normalize(
            images,
            dtype=types.FLOAT,
            output_layout="CHW",
            crop=None if train else (image_size, image_size),
            mean=[m * 255 for m in IMAGENET_MEAN],
            std=[s * 255 for s in IMAGENET_STD],
            mirror=fn.random.coin_flip(probability=0.5) if train else 0,
        )
        return images, cls, jpg.shape()

    p = pipe()
    p.build()

    def batches():
        while True:
            images, _labels, sizes = p.run()
            yield {"n": len(images), "bytes": int(np.asarray(sizes.as_tensor()).sum())}

    return batches


def _plot(results: dict[str, dict[str, float]], path: str, title: str) -> None:
    from PIL import Image, ImageDraw

    names = list(results)
    top = max(r["images_per_s"] for r in results.values()) or 1
    w, h, bar = 640, 360, 120
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 8), title, fill="black")
    for i, name in enumerate(names):
        v = results[name]["images_per_s"]
        x = 60 + i * (bar + 60)
        y = 320 - int(260 * v / top)
        d.rectangle([x, y, x + bar, 320], fill=("#4472c4", "#70ad47", "#a5a5a5")[i % 3])
        d.text((x, y - 14), f"{v:,.0f} img/s", fill="black")
        d.text((x, 326), name, fill="black")
    img.save(path)


def _measure_loader(loader, args: argparse.Namespace, output: str) -> dict[str, float]:
    """A loader's rate; its bytes are the samples times the split's mean stored bytes per sample."""
    per_sample = sum(e["num_bytes"] for e in loader.manifest["shards"]) / max(1, loader.manifest["num_samples"])
    count = lambda b: (len(b[output]), int(len(b[output]) * per_sample))  # noqa: E731
    return _measure(lambda: iter(loader), args.seconds, args.warmup, count, args.device)


def _measure_loop(batches, args: argparse.Namespace) -> dict[str, float]:
    """A baseline's rate: its batches say their samples (`n`) and bytes."""
    return _measure(batches, args.seconds, args.warmup, lambda b: (b["n"], b["bytes"]), args.device)


def _image_loader_options(args: argparse.Namespace) -> dict[str, object]:
    """The image loaders' options as the command gives them (ImageNet's and Open Images' runs alike)."""
    return {
        "batch_size": args.batch_size,
        "train": not args.eval,
        "device": args.device,
        "num_threads": args.workers,
        "image_size": args.image_size,
    }


def _measure_openimages(which: str, args: argparse.Namespace) -> dict[str, float]:
    from infra.bench.baselines import detection_batches
    from loaders import openimages_dali

    loader = openimages_dali(args.data, **_image_loader_options(args))
    if which == "loader":
        return _measure_loader(loader, args, "num_boxes")
    return _measure_loop(detection_batches(loader.split_url, args.batch_size, args.workers, args.image_size), args)


def _measure_youtube8m(which: str, args: argparse.Namespace) -> dict[str, float]:
    from infra.bench.baselines import arrow_feature_batches
    from loaders import youtube8m_dali

    loader = youtube8m_dali(args.data, batch_size=args.batch_size, device=args.device, num_threads=args.workers)
    if which == "loader":
        return _measure_loader(loader, args, "labels")
    return _measure_loop(arrow_feature_batches(loader.split_url, args.batch_size, loader.manifest["level"]), args)


def _measure_fma(which: str, args: argparse.Namespace) -> dict[str, float]:
    from infra.bench.baselines import audio_batches
    from loaders import fma_dali

    kw = dict(clip_seconds=args.clip_seconds, n_mels=args.n_mels)
    loader = fma_dali(args.data, batch_size=args.batch_size, device=args.device, num_threads=args.workers, **kw)
    if which == "loader":
        return _measure_loader(loader, args, "label")
    return _measure_loop(
        audio_batches(loader.split_url, args.batch_size, args.workers, args.clip_seconds, args.n_mels), args
    )


def _measure_one(which: str, args: argparse.Namespace) -> dict[str, float]:
    """One configuration (`which`: the loader, bare DALI, the baseline) of the dataset's benchmark."""
    measure = {
        "imagenet": _measure_imagenet,
        "openimages": _measure_openimages,
        "youtube8m": _measure_youtube8m,
        "fma": _measure_fma,
    }
    return measure[args.dataset](which, args)


def _measure_imagenet(which: str, args: argparse.Namespace) -> dict[str, float]:
    from loaders import imagenet_dali

    loader = imagenet_dali(args.data, **_image_loader_options(args))
    if which == "loader":
        return _measure_loader(loader, args, "label")
    if which.startswith("bare DALI"):
        bare = _bare_dali_batches(
            loader.split_url,
            loader.manifest,
            args.batch_size,
            args.workers,
            args.image_size,
            args.device,
            train=not args.eval,
            hw_decoder_load=0.0 if which == NO_HW else None,
        )
        return _measure_loop(bare, args)
    from infra.bench.baselines import imagenet_batches  # torch: imported only when measured, not for --help

    pil = imagenet_batches(loader.split_url, args.batch_size, args.workers, args.image_size)
    return _measure(pil, args.seconds, args.warmup, lambda b: (len(b["label"]), b["bytes"]))


NO_HW = "bare DALI, no HW decoder"  # hw_decoder_load=0: every image on nvJPEG's CUDA path, none on the engines


def main(argv: list[str] | None = None) -> int:
    import subprocess
    import sys

    from shards.cli import OneLineParser

    argv = sys.argv[1:] if argv is None else argv
    sub = f"loader_{argv[0]}" if argv and argv[0] in ("reading", "mix", "coco", "cifar10", "plan", "startup") else None
    if sub:  # the reading path alone, a mixture, COCO, CIFAR-10, the epoch plan, start-up at scale (infra/bench/loader_<name>.py)
        import importlib

        return importlib.import_module(f"infra.bench.{sub}").main(argv[1:])

    p = OneLineParser(prog="python -m loaders.bench", description=__doc__.split("\n")[0])
    p.add_argument("dataset", choices=["imagenet", "openimages", "youtube8m", "fma", "reading"])
    p.add_argument("--data", required=True, help="a split URL written by the dataset's pipeline")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where the graphs run (default cpu)")
    p.add_argument("--batch-size", type=int, default=64, help="default 64")
    p.add_argument("--seconds", type=float, default=10, help="measured seconds per configuration and round (default 10)")  # fmt: skip
    p.add_argument("--warmup", type=float, default=3, help="seconds run before measuring (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="A-B-C rounds; figures are medians (default 3)")
    p.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="DALI threads = DataLoader workers (default: the cores)",
    )
    p.add_argument("--image-size", type=int, default=224, help="output side in pixels (default 224)")
    p.add_argument("--eval", action="store_true", help="imagenet/openimages: the eval graph (default: train)")
    p.add_argument("--clip-seconds", type=float, default=10.0, help="fma: seconds of audio per clip")
    p.add_argument("--n-mels", type=int, default=128, help="fma: mel bands")
    p.add_argument(
        "--baseline",
        choices=["pil", "none"],
        default="pil",
        help="pil: the plain baseline (a PIL DataLoader; for youtube8m a pyarrow + numpy loop; for fma a soundfile + "
        "NumPy STFT/mel DataLoader)",
    )
    p.add_argument("--json", help="write every figure and run here")
    p.add_argument("--plot", help="draw the images/s of each configuration into this PNG")
    p.add_argument("--only", help=argparse.SUPPRESS)  # internal: measure one configuration in this process
    args = p.parse_args(argv)
    if args.only:
        print(json.dumps(_measure_one(args.only, args)))
        return 0
    configs = ["loader"] + (["bare DALI"] if args.dataset == "imagenet" else [])
    if args.dataset == "imagenet" and args.device == "gpu":
        configs.append(NO_HW)  # what the hardware JPEG decoders add
    baseline = {"youtube8m": "pyarrow loop", "fma": "soundfile+numpy"}.get(args.dataset, "PIL DataLoader")
    configs += [baseline] if args.baseline == "pil" else []
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in configs}
    base = [
        args.dataset,
        "--data",
        args.data,
        "--device",
        args.device,
        "--batch-size",
        str(args.batch_size),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--workers",
        str(args.workers),
        "--image-size",
        str(args.image_size),
        "--clip-seconds",
        str(args.clip_seconds),
        "--n-mels",
        str(args.n_mels),
        *(["--eval"] if args.eval else []),
    ]
    for _ in range(args.rounds):
        for c in configs:  # one process per measurement: nothing of one configuration runs during another
            out = subprocess.run(
                [sys.executable, "-m", "infra.bench.loader", *base, "--only", c],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[c].append(json.loads(out.stdout.strip().splitlines()[-1]))
    results = {c: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for c, rs in runs.items()}
    unit = {"youtube8m": "videos", "fma": "clips"}.get(args.dataset, "images")
    for name, r in results.items():
        each = ", ".join(f"{x['images_per_s']:.0f}" for x in runs[name])
        print(
            f"{name:>15}: {r['images_per_s']:8,.0f} {unit}/s {r['MB_per_s'] / 1000:7.3f} GB/s  {r['cores_busy']:.2f} cores busy  (runs: {each})"
            + "".join(f"  {k.split('_')[0]} {r[k]:.0f}%" for k in ("sm_util_pct", "jpg_util_pct") if k in r)
        )
    ratios = {}
    if "bare DALI" in results:
        ratios["loader_over_bare_dali"] = results["loader"]["images_per_s"] / results["bare DALI"]["images_per_s"]
    if NO_HW in results:
        ratios["hw_decoder_speedup"] = results["bare DALI"]["images_per_s"] / results[NO_HW]["images_per_s"]
    if "PIL DataLoader" in results:
        ratios["loader_over_pil"] = results["loader"]["images_per_s"] / results["PIL DataLoader"]["images_per_s"]
    if "soundfile+numpy" in results:
        ratios["loader_over_soundfile_numpy"] = (
            results["loader"]["images_per_s"] / results["soundfile+numpy"]["images_per_s"]
        )
    if args.dataset == "fma":
        for name, r in results.items():
            r["audio_seconds_per_s"] = r["images_per_s"] * args.clip_seconds
            print(f"{name:>15}: {r['audio_seconds_per_s']:8,.0f} audio-seconds/s ({args.clip_seconds:g} s clips)")
    if "pyarrow loop" in results:
        ratios["loader_over_pyarrow"] = results["loader"]["images_per_s"] / results["pyarrow loop"]["images_per_s"]
    for k, v in ratios.items():
        print(f"{k} = {v:.2f}")
    out = {
        "benchmark": f"{args.dataset}-loader",
        "device": args.device,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "graph": "eval" if args.eval else "train",
        "data": args.data,
        "rounds": args.rounds,
        "results": results,
        "runs": runs,
        "ratios": ratios,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.plot:
        _plot(
            results,
            args.plot,
            f"{args.dataset} train graph, {args.device}, {args.workers} workers, batch {args.batch_size}",
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
