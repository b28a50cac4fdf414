"""The whole GPU check in one command: environment, `pytest -m gpu`, data, every loader benchmark, one JSON.

    python -m infra.gpu.run OUT [--device gpu|cpu] [--scale full|small] [--budget SECONDS]

Run by `infra/gpu/check.sh` on the GPU machine (after it unpacks the staged DALI), and by `infra/gpu/rehearse.sh`
here with `--device cpu --scale small`. Every step has its own time limit inside `--budget`; a step that fails or
runs out of time is recorded as such and the rest still run, so one broken step never costs the others' figures.
OUT receives `gpu-results.json` (every figure, each with its command, the targets and whether each was met), the
ImageNet plot, and `logs.tar.gz` (pytest's and each benchmark's output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from typing import Any

__all__ = ["main", "TARGETS"]

# issue 13's targets on one H200, one rank: (result key, ratio or rate key, minimum)
TARGETS = {
    "imagenet-train": [("loader", "images_per_s", 12_000), ("ratios", "loader_over_bare_dali", 0.9)],
    "imagenet-eval": [("loader", "images_per_s", 15_000), ("ratios", "loader_over_bare_dali", 0.9)],
    "youtube8m-video": [("loader", "images_per_s", 1_000_000)],
    "fma": [("loader", "images_per_s", 2_000)],
}

SCALES = {  # data sizes and benchmark lengths
    "full": {
        "splits": [
            "--images",
            "16384",
            "--boxes-images",
            "4096",
            "--videos",
            "200000",
            "--frames",
            "2000",
            "--coco-images",
            "2048",
        ],
        "clips": 384,
        "bench": ["--seconds", "6", "--warmup", "3"],
        "pytest_timeout": 200,
    },
    "small": {
        "splits": [
            "--images",
            "256",
            "--boxes-images",
            "96",
            "--videos",
            "8000",
            "--frames",
            "64",
            "--coco-images",
            "64",
        ],
        "clips": 24,
        "bench": ["--seconds", "2", "--warmup", "1"],
        "pytest_timeout": 300,
    },
}


def _benches(data: str, device: str, workers: int, scale: str) -> list[tuple[str, list[str]]]:
    """(name, arguments of `python -m loaders.bench`) for every figure issue 13 asks for."""
    full = scale == "full"
    common = ["--device", device, "--workers", str(workers), *SCALES[scale]["bench"], "--baseline", "none"]
    split = lambda name: ["--data", os.path.join(data, name, "train")]  # noqa: E731
    benches = [
        ("imagenet-train", ["imagenet", *split("imagenet"), "--batch-size", "256" if full else "32", "--rounds", "2"]),
        ("imagenet-eval", ["imagenet", *split("imagenet"), "--batch-size", "256" if full else "32", "--eval"]),
        ("openimages-detection", ["openimages", *split("openimages"), "--batch-size", "64" if full else "16",
                                  "--image-size", "512"]),
        ("youtube8m-video", ["youtube8m", *split("youtube8m-video"), "--batch-size", "4096" if full else "512"]),
        ("youtube8m-frame", ["youtube8m", *split("youtube8m-frame"), "--batch-size", "64" if full else "8"]),
        ("fma", ["fma", *split("fma"), "--batch-size", "128" if full else "8", "--clip-seconds", "10"]),
    ]  # fmt: skip
    return [(name, [*args, *(["--rounds", "1"] if "--rounds" not in args else []), *common]) for name, args in benches]


class Run:
    """Steps under one deadline; each step's command, exit status, seconds and log are recorded."""

    def __init__(self, out: str, budget: float):
        self.out, self.deadline = out, time.monotonic() + budget
        self.logs = os.path.join(out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.steps: list[dict[str, Any]] = []

    def step(self, name: str, cmd: list[str], limit: float, env: dict[str, str] | None = None) -> dict[str, Any]:
        left = self.deadline - time.monotonic()
        record: dict[str, Any] = {"step": name, "command": " ".join(cmd)}
        if left < 20:
            record |= {"status": "not run: out of time", "seconds": 0}
            self.steps.append(record)
            print(f"[{name}] not run: out of time", flush=True)
            return record
        limit = min(limit, left - 10)
        t0 = time.monotonic()
        log = os.path.join(self.logs, f"{name}.log")
        print(f"[{name}] {record['command']} (limit {limit:.0f} s)", flush=True)
        with open(log, "w") as f:
            try:
                p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=limit, env=env)
                record["status"] = "ok" if p.returncode == 0 else f"failed (exit {p.returncode})"
            except subprocess.TimeoutExpired:
                record["status"] = f"timed out after {limit:.0f} s"
        record["seconds"] = round(time.monotonic() - t0, 1)
        with open(log) as f:
            tail = f.read()[-1500:]
        print(f"[{name}] {record['status']} in {record['seconds']} s\n{tail}", flush=True)
        self.steps.append(record)
        return record


def environment() -> dict[str, Any]:
    """The machine, driver, CUDA, torch, DALI and Python versions, as this process sees them."""
    env: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count(), "host": platform.node()}
    try:
        q = "name,driver_version,memory.total,clocks.max.sm"
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True
        )
        env["gpu"] = out.stdout.strip() or out.stderr.strip()
    except FileNotFoundError:
        env["gpu"] = "none (no nvidia-smi)"
    for mod in ("torch", "nvidia.dali", "numpy", "pyarrow"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            env[mod] = m.__version__
        except Exception as e:  # a missing or broken install is a finding, not a crash
            env[mod] = f"unavailable: {e}"
    try:
        import torch

        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            env["device_name"] = torch.cuda.get_device_name(0)
    except Exception as e:
        env["torch_cuda"] = f"unavailable: {e}"
    return env


def _pytest_summary(log: str) -> str:
    try:
        with open(log) as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except FileNotFoundError:
        return ""
    return next((ln.strip("= ") for ln in reversed(lines) if " in " in ln and ("passed" in ln or "failed" in ln)), "")


def _check_targets(benches: dict[str, Any]) -> list[dict[str, Any]]:
    checks = []
    for name, wanted in TARGETS.items():
        for where, key, minimum in wanted:
            r = benches.get(name, {})
            value = r.get("ratios", {}).get(key) if where == "ratios" else r.get("results", {}).get(where, {}).get(key)
            checks.append({"bench": name, "figure": f"{where}.{key}", "target": minimum, "value": value,
                           "met": value is not None and value >= minimum})  # fmt: skip
    return checks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m infra.gpu.run", description=__doc__.split("\n")[0])
    p.add_argument("out", help="folder for gpu-results.json, the plot and logs.tar.gz")
    p.add_argument("--device", choices=["gpu", "cpu"], default="gpu", help="cpu: the rehearsal (default gpu)")
    p.add_argument("--scale", choices=list(SCALES), default="full", help="data and run lengths (default full)")
    p.add_argument("--budget", type=float, default=500, help="seconds for everything (default 500)")
    p.add_argument("--data", help="where the splits go (default: a folder in the temp dir, removed at the end)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DALI threads (default: all cores)")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    os.makedirs(a.out, exist_ok=True)
    run = Run(a.out, a.budget)
    import tempfile

    scratch = None if a.data else tempfile.mkdtemp(prefix="shardkit-gpu-data-")
    data = a.data or scratch
    py = sys.executable
    results: dict[str, Any] = {"device": a.device, "scale": a.scale, "environment": environment(), "benches": {}}
    print(json.dumps(results["environment"], indent=1), flush=True)

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if a.device == "cpu":
        env["SHARDKIT_GPU_TESTS_ON"] = "cpu"
    cmd = [py, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-q", "-rfEs", "--timeout", "240"]
    run.step("pytest-gpu", cmd, SCALES[a.scale]["pytest_timeout"], env)
    results["pytest"] = _pytest_summary(os.path.join(run.logs, "pytest-gpu.log"))

    splits = [py, "-m", "infra.gpu.splits", data, *SCALES[a.scale]["splits"], "--clips", str(SCALES[a.scale]["clips"])]
    run.step("data", splits, 150, env)

    for name, args in _benches(data, a.device, a.workers, a.scale):
        out_json = os.path.join(run.logs, f"{name}.json")
        extra = ["--plot", os.path.join(a.out, "gpu-imagenet-train.png")] if name == "imagenet-train" else []
        rec = run.step(name, [py, "-m", "loaders.bench", *args, "--json", out_json, *extra], 150, env)
        if os.path.exists(out_json):
            with open(out_json) as f:
                results["benches"][name] = json.load(f) | {"command": rec["command"].replace(py, "python")}
    results["targets"] = _check_targets(results["benches"]) if a.device == "gpu" else "not checked on the CPU"
    results["steps"] = run.steps
    results["seconds"] = round(time.monotonic() - t0, 1)
    with open(os.path.join(a.out, "gpu-results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with tarfile.open(os.path.join(a.out, "logs.tar.gz"), "w:gz") as tar:
        tar.add(run.logs, arcname="logs")
    import shutil

    shutil.rmtree(run.logs)
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
    failed = [s["step"] for s in run.steps if s["status"] != "ok"]
    print(f"pytest: {results['pytest']}; steps not ok: {failed or 'none'}; {results['seconds']} s in all")
    for t in results["targets"] if isinstance(results["targets"], list) else []:
        print(f"target {t['bench']} {t['figure']} >= {t['target']}: {t['value']} {'met' if t['met'] else 'NOT met'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
