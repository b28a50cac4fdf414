"""Session fixtures: photo-like sample folders, a real S3 endpoint on loopback, the conformance conversions, and
every temporary kept under pytest's own folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from infra.photos import photo_jpeg

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session", autouse=True)
def _temporaries_under_pytests_folder(tmp_path_factory):
    """Every temporary the tests and the processes they start make (the loaders' default shard cache, Beam's
    staging folders, ...) goes under pytest's own folder for the session, not loose in /tmp."""
    import tempfile

    folder = tmp_path_factory.getbasetemp() / "tmp"
    folder.mkdir(exist_ok=True)
    old_env, old_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(folder), str(folder)
    yield
    tempfile.tempdir = old_dir
    if old_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old_env


def pytest_collection_modifyitems(config, items):
    from tests.devices import FORCED_TO_CPU

    try:
        import torch

        has_cuda = torch.cuda.is_available() or FORCED_TO_CPU  # forced: the rehearsal of the GPU check
    except ImportError:
        has_cuda = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU; run on the GPU machine (see README, GPU checks)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def conversions(tmp_path_factory):
    """Every conformance case converted once per session and runner (`tests/conversions.py`)."""
    from tests.conversions import Conversions

    return Conversions(tmp_path_factory.mktemp("conversions"))


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    """60 samples of `<key>.jpg` + `<key>.cls`, photo-like 160x120 JPEGs, plus one `.txt` on a few samples."""
    root = tmp_path_factory.mktemp("photos")
    for i in range(60):
        (root / f"img{i:04d}.jpg").write_bytes(photo_jpeg(i, size=(160, 120)))
        (root / f"img{i:04d}.cls").write_text(str(i % 5))
        if i % 20 == 0:
            (root / f"img{i:04d}.txt").write_text(f"caption {i}")
    return root


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 in its own process, with bucket `test`; env set for this session."""
    from infra.local_s3 import local_s3

    with local_s3(buckets=("test",)) as env:
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield env
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture(scope="session")
def coco_splits(tmp_path_factory) -> dict[str, Path]:
    """The generated COCO (tests/raw/coco.py) converted by `python -m pipelines coco`, from folders and from zips:
    {layout: output folder holding train/ and validation/}."""
    import subprocess
    import sys

    from tests.raw import coco

    root = tmp_path_factory.mktemp("coco")
    out = {}
    for layout, write in coco.LAYOUTS.items():
        cmd = [sys.executable, "-m", "pipelines", "coco", "--input", str(write(root / f"raw-{layout}")), "--output",
               str(root / f"out-{layout}"), "--min-shards", "2", "--max-bad-fraction", "0.8", "--no-progress"]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        out[layout] = root / f"out-{layout}"
    return out
