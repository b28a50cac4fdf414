"""Differential test: DALI's webdataset reader (CPU) returns exactly the reference reader's bytes via our .idx."""

from __future__ import annotations

import io

import numpy as np
import pytest

from shards.manifest import read_manifest
from shards.pack import PackConfig, pack_folder
from shards.wds import iter_samples


def test_dali_webdataset_reader_matches_reference(photo_folder, tmp_path):
    dali = pytest.importorskip("nvidia.dali", reason="DALI is not installed (pip install '.[dali]')")
    from nvidia.dali import fn

    split = tmp_path / "train"
    m = pack_folder(str(photo_folder), str(split), PackConfig(shard_size=60_000, seed=3))
    assert len(m["shards"]) > 3
    tars = [str(split / s["path"]) for s in m["shards"]]
    idxs = [str(split / s["idx"]) for s in m["shards"]]
    expected = []
    for t in tars:
        with open(t, "rb") as f:
            expected += [(s["jpg"], s["cls"]) for _, s in iter_samples(io.BytesIO(f.read()), url=t)]

    @dali.pipeline_def(batch_size=7, num_threads=1, device_id=None)
    def pipe():
        jpg, cls = fn.readers.webdataset(
            paths=tars, index_paths=idxs, ext=["jpg", "cls"], missing_component_behavior="error", name="r"
        )
        return jpg, cls

    p = pipe()
    p.build()
    assert p.epoch_size("r") == m["num_samples"] == len(expected) == 60
    got = []
    while len(got) < len(expected):
        jpg, cls = p.run()
        got += [(np.asarray(jpg.at(i)).tobytes(), np.asarray(cls.at(i)).tobytes()) for i in range(len(jpg))]
    assert got[: len(expected)] == expected
    assert read_manifest(str(split))["num_samples"] == 60
