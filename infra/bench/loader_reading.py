"""`python -m loaders.bench reading`: the loaders' reading path, measured against DALI's own reader and itself.

- `null`: a graph that decodes nothing (it takes the JPEG bytes' shapes and the labels) on one core (the process
  pinned with sched_setaffinity, one DALI thread): our loader against DALI's `fn.readers.webdataset` over the same
  shards and `.idx` files, in interleaved rounds, each in its own process.
- `main-thread`: the CPU seconds the training process's main thread spends per 10,000 samples on the real ImageNet
  train graph (`time.thread_time()` around the iteration: what the reading path takes from the thread that also
  drives the training step), for our loader and for the same graph fed by DALI's own reader (DALI's part).
- `integrity`: the ImageNet train graph with shard verification on and off, interleaved.
- `cold`: a cold `s3://` epoch (null graph) through a throttled loopback endpoint (`infra/throttle.py`: first-byte
  latency and bandwidth per connection), with one stream and with the default number of streams: the fetch rate
  (bytes over the span from the first download's start to the last one's end), the epoch's wall time (which
  also holds the pipeline's build) and bytes fetched. Needs moto (the `dev` extra).

    python -m loaders.bench reading --data SPLIT [--what null,main-thread,integrity,cold] [--json F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

__all__ = ["main"]


def _null_graph(encoded: dict[str, Any], device: str) -> dict[str, Any]:
    return {"size": encoded["jpg"].shape(), "label": encoded["cls"]}


def _our_null(data: str, batch_size: int, **options: Any):
    from loaders.core import class_label
    from loaders.generic import Graph, generic_dali
    from loaders.spec import ReadSpec

    graph = Graph(_null_graph, ReadSpec(fields=("jpg", "cls"), host_fields={"cls": class_label}))
    return generic_dali(data, batch_size, graph=graph, device="cpu", num_threads=1, **options)


def _dali_null(data: str, batch_size: int):
    from nvidia.dali import fn, pipeline_def

    from shards import storage
    from shards.manifest import read_manifest, split_url_of

    split = split_url_of(data)
    m = read_manifest(split)
    tars = [storage.join(split, e["path"]) for e in m["shards"]]
    idxs = [storage.join(split, e["idx"]) for e in m["shards"]]

    @pipeline_def(batch_size=batch_size, num_threads=1, device_id=None, seed=0)
    def pipe():
        jpg, cls = fn.readers.webdataset(paths=tars, index_paths=idxs, ext=["jpg", "cls"], random_shuffle=True)
        return jpg.shape(), cls

    p = pipe()
    p.build()
    return p


def _rate(step, seconds: float, warmup: float, per_step: int) -> float:
    t_end = time.perf_counter() + warmup
    while time.perf_counter() < t_end:
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += per_step
    return n / (time.perf_counter() - t0)


def _looping(loader):
    it = iter(loader)

    def step():
        nonlocal it
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            next(it)

    return step


def measure_one(which: str, a: argparse.Namespace) -> dict[str, float]:
    """One configuration, in this process."""
    if which in ("ours-null", "dali-null"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        if which == "dali-null":
            p = _dali_null(a.data, a.batch_size)
            return {"samples_per_s": _rate(p.run, a.seconds, a.warmup, a.batch_size)}
        loader = _our_null(a.data, a.batch_size)
        return {"samples_per_s": _rate(_looping(loader), a.seconds, a.warmup, a.batch_size)}
    if which == "main-thread-dali":  # the same train graph fed by DALI's own reader: DALI's part of the cost
        from infra.bench.loader import _bare_dali_batches
        from shards.manifest import read_manifest, split_url_of

        split = split_url_of(a.data)
        batches = _bare_dali_batches(split, read_manifest(split), a.batch_size, a.workers, 224, "cpu")()
        step = lambda: next(batches)  # noqa: E731
        return _main_thread(step, a)
    from loaders import imagenet_dali

    options = {"verify": which != "verify-off"} if which.startswith("verify") else {}
    loader = imagenet_dali(a.data, batch_size=a.batch_size, train=True, device="cpu", num_threads=a.workers, **options)
    step = _looping(loader)
    if which == "main-thread":
        return _main_thread(step, a)
    return {"samples_per_s": _rate(step, a.seconds, a.warmup, a.batch_size)}


def _main_thread(step, a: argparse.Namespace) -> dict[str, float]:
    """CPU seconds of this (the main) thread per 10,000 samples, after the warm-up."""
    _rate(step, 0, a.warmup, a.batch_size)
    n, c0, t0 = 0, time.thread_time(), time.perf_counter()
    while time.perf_counter() - t0 < a.seconds:
        step()
        n += a.batch_size
    cpu = time.thread_time() - c0
    return {"main_thread_s_per_10k": cpu / n * 10_000, "samples_per_s": n / (time.perf_counter() - t0)}


def _cold(a: argparse.Namespace) -> dict[str, Any]:
    """A cold s3:// epoch through the throttle, with 1 stream and with the default."""
    import tempfile

    from infra.local_s3 import local_s3
    from infra.throttle import Throttle
    from loaders.cache import DEFAULT_STREAMS
    from shards import storage
    from shards.manifest import read_manifest, split_url_of

    split = split_url_of(a.data)
    out: dict[str, Any] = {"latency_s": a.latency, "MB_per_s_per_stream": a.bandwidth / 1e6}
    with local_s3(buckets=("bench",)) as env:
        os.environ.update(env)
        url = "s3://bench/reading/train"
        for name in [*(e["path"] for e in read_manifest(split)["shards"]), *(e["idx"] for e in read_manifest(split)["shards"]), "manifest.json"]:  # fmt: skip
            storage.write_bytes(f"{url}/{name}", storage.read_bytes(storage.join(split, name)))
        total = sum(e["num_bytes"] for e in read_manifest(url)["shards"])
        port = int(env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
        for streams in (1, DEFAULT_STREAMS):
            with Throttle(port, latency=a.latency, bandwidth=a.bandwidth) as proxy, tempfile.TemporaryDirectory() as d:
                env_throttled = {**os.environ, "AWS_ENDPOINT_URL": proxy.url}
                cmd = [sys.executable, "-m", "infra.bench.loader_reading", "--data", url, "--cold-epoch", str(streams),
                       "--batch-size", str(a.batch_size), "--cache-dir", d]  # fmt: skip
                r = subprocess.run(cmd, capture_output=True, text=True, env=env_throttled, check=True)
                res = json.loads(r.stdout.strip().splitlines()[-1])
                res |= {"split_bytes": total, "connections": proxy.connections, "proxy_bytes": proxy.bytes_down}
                out[f"streams={streams}"] = res
        # the rate at which the split came over: from the first download's start to the last one's end
        out["speedup"] = out["streams=1"]["fetch_seconds"] / out[f"streams={DEFAULT_STREAMS}"]["fetch_seconds"]
        out["epoch_speedup"] = out["streams=1"]["seconds"] / out[f"streams={DEFAULT_STREAMS}"]["seconds"]
    return out


def _cold_epoch(a: argparse.Namespace) -> dict[str, float]:
    loader = _our_null(a.data, a.batch_size, cache_dir=a.cache_dir, fetch_streams=a.cold_epoch)
    t0 = time.perf_counter()
    n = sum(1 for _ in loader) * a.batch_size
    dt = time.perf_counter() - t0
    first, last = loader.cache.fetch_window
    fetched = loader.cache.bytes_fetched
    return {"seconds": dt, "samples": n, "bytes_fetched": fetched, "fetch_seconds": last - first,
            "fetch_MB_per_s": fetched / (last - first) / 1e6}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from shards.cli import OneLineParser

    p = OneLineParser(prog="python -m loaders.bench reading", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="an ImageNet-format split (jpg, cls) on local disk")
    p.add_argument("--what", default="null,main-thread,integrity,cold", help="which figures (default: all four)")
    p.add_argument("--batch-size", type=int, default=64, help="default 64")
    p.add_argument("--seconds", type=float, default=5, help="measured seconds per configuration and round (default 5)")
    p.add_argument("--warmup", type=float, default=2, help="default 2")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians (default 3)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DALI threads, ImageNet graph (default: all cores)")  # fmt: skip
    p.add_argument("--latency", type=float, default=0.03, help="cold: first-byte latency per request, s (default 0.03)")
    p.add_argument("--bandwidth", type=float, default=50e6, help="cold: bytes/s per connection (default 50e6)")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--only", help=argparse.SUPPRESS)  # internal: one configuration in this process
    p.add_argument("--cold-epoch", type=int, help=argparse.SUPPRESS)  # internal: one cold epoch with N streams
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.only:
        print(json.dumps(measure_one(a.only, a)))
        return 0
    if a.cold_epoch:
        print(json.dumps(_cold_epoch(a)))
        return 0
    what = a.what.split(",")
    groups = {"null": ["ours-null", "dali-null"], "main-thread": ["main-thread", "main-thread-dali"], "integrity": ["verify-on", "verify-off"]}  # fmt: skip
    configs = [c for w in what for c in groups.get(w, [])]
    runs: dict[str, list[dict[str, float]]] = {c: [] for c in configs}
    base = ["--data", a.data, "--batch-size", str(a.batch_size), "--seconds", str(a.seconds), "--warmup", str(a.warmup), "--workers", str(a.workers)]  # fmt: skip
    for _ in range(a.rounds):
        for c in configs:
            r = subprocess.run([sys.executable, "-m", "infra.bench.loader_reading", *base, "--only", c], capture_output=True, text=True)  # fmt: skip
            if r.returncode:
                raise SystemExit(f"{c} failed:\n{r.stderr[-2000:]}")
            runs[c].append(json.loads(r.stdout.strip().splitlines()[-1]))
    results: dict[str, Any] = {c: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for c, rs in runs.items()}
    ratios = {}
    if "ours-null" in results:
        ratios["null_ours_over_dali_reader"] = results["ours-null"]["samples_per_s"] / results["dali-null"]["samples_per_s"]  # fmt: skip
    if "verify-on" in results:
        ratios["verify_on_over_off"] = results["verify-on"]["samples_per_s"] / results["verify-off"]["samples_per_s"]
    if "cold" in what:
        results["cold"] = _cold(a)
        ratios["cold_default_streams_over_one"] = results["cold"]["speedup"]
    for c, r in results.items():
        print(f"{c:>12}: " + ", ".join(f"{k} {v:,.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
    for k, v in ratios.items():
        print(f"{k} = {v:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"benchmark": "reading", "data": a.data, "batch_size": a.batch_size, "results": results, "runs": runs, "ratios": ratios}, f, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
