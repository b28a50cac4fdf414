"""Conformance: every registered loader, eval graph on the CPU, equals its module's pure-Python reference
(`reference_eval`) on shards its pipeline wrote from fake raw data: same labels, same pixels within the tolerance
its tests/raw module states, every sample once."""

from __future__ import annotations

import importlib
import io
import subprocess
import sys

import numpy as np
import pytest

import loaders
from shards.manifest import read_manifest
from shards.wds import iter_samples

pytest.importorskip("nvidia.dali", reason="DALI is not installed (pip install '.[dali]')")


@pytest.mark.parametrize("dataset", loaders.available())
def test_loader_matches_reference(dataset, tmp_path):
    raw = importlib.import_module(f"tests.raw.{dataset}")
    module = importlib.import_module(f"loaders.{dataset}")
    assert hasattr(module, "reference_eval"), f"loaders/{dataset}.py needs reference_eval(sample, **kwargs)"
    layout = next(iter(raw.LAYOUTS))
    inp = raw.LAYOUTS[layout](tmp_path / "raw")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipelines", dataset, "--input", str(inp), "--output", str(out), "--no-progress"]
    cmd += ["--min-shards", "2", "--max-bad-fraction", "0.5", *getattr(raw, "EXTRA_ARGS", [])]
    cmd += getattr(raw, "LAYOUT_ARGS", {}).get(layout, [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    split = next(p for p in sorted(out.iterdir()) if (p / "manifest.json").exists())
    kwargs = raw.LOADER["kwargs"]
    reference = {}
    for entry in read_manifest(str(split))["shards"]:
        if entry["path"].endswith(".arrow"):  # a row per sample, keyed by its `id`
            import pyarrow as pa

            for row in pa.ipc.open_file(pa.memory_map(str(split / entry["path"]))).read_all().to_pylist():
                reference[row["id"]] = module.reference_eval(row, **kwargs)
            continue
        with open(split / entry["path"], "rb") as f:
            for key, sample in iter_samples(io.BytesIO(f.read())):
                reference[key] = module.reference_eval(sample, **kwargs)
    make = getattr(loaders, f"{dataset}_dali")
    loader = make(str(split), batch_size=4, train=False, device="cpu", return_keys=True, drop_last=False, **kwargs)
    seen = []
    for batch in loader:
        for j, key in enumerate(batch["key"]):
            seen.append(key)
            for name, ref in reference[key].items():
                got = batch[name][j].numpy()
                if name in raw.LOADER["tolerance"]:
                    mean_tol, p99_tol = raw.LOADER["tolerance"][name]
                    diff = np.abs(got - ref)
                    assert diff.mean() <= mean_tol and np.percentile(diff, 99) <= p99_tol, (key, name, diff.mean())
                else:
                    assert np.array_equal(got, ref), (key, name)
    assert sorted(seen) == sorted(reference), "the eval loader must give every sample of the split once"
