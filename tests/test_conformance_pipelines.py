"""Conformance: every registered dataset job converts fake raw data of every layout into shards that verify,
account for every input, and that DALI's webdataset reader (CPU) reads through their indexes."""

from __future__ import annotations

import numpy as np
import pytest

from shards.manifest import read_manifest
from shards.verify import verify_split
from tests.conversions import CASES


def _dali_count(split_url, manifest) -> int:
    dali = pytest.importorskip("nvidia.dali", reason="DALI is not installed (pip install '.[dali]')")
    from nvidia.dali import fn

    tars = [f"{split_url}/{s['path']}" for s in manifest["shards"]]
    idxs = [f"{split_url}/{s['idx']}" for s in manifest["shards"]]
    fields = sorted(manifest["fields"])

    @dali.pipeline_def(batch_size=8, num_threads=1, device_id=None)
    def pipe():
        outs = fn.readers.webdataset(
            paths=tars, index_paths=idxs, ext=fields, missing_component_behavior="error", name="r"
        )
        return tuple(outs) if isinstance(outs, list | tuple) else (outs,)

    p = pipe()
    p.build()
    n = p.epoch_size("r")
    first = p.run()
    # every sample has data (a field may be empty for some samples: an image without boxes)
    assert all(any(np.asarray(out.at(i)).size > 0 for out in first) for i in range(len(first[0])))
    return n


@pytest.mark.parametrize("dataset, layout", CASES)
def test_dataset_converts_every_layout(dataset, layout, conversions):
    assert layout is not None, f"tests/raw/{dataset}.py with LAYOUTS is missing: every dataset ships fake raw data"
    r, out = conversions.get(dataset, layout)
    assert r.returncode == 0, r.stderr[-3000:]
    splits = [p.name for p in out.iterdir() if (p / "manifest.json").exists()]
    assert splits, "the job wrote no split"
    for split in splits:
        report = verify_split(str(out / split))
        assert report.ok, report.problems
        m = read_manifest(str(out / split))
        assert m["source"]["inputs_seen"] == m["num_samples"] + m["quarantine"]["count"]
        if all(s["path"].endswith(".tar") for s in m["shards"]):  # Arrow shards: verify read every row above
            assert _dali_count(str(out / split), m) == m["num_samples"]
