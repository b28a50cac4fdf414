"""The pipeline conformance cases (every registered job x every layout of its fake raw data, `tests/raw/`) and
their conversions, made once per session (`conftest.conversions`) and shared by the suites that check them
(`test_conformance_pipelines.py`) and compare runners on them (`test_dask.py`)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import pipelines

__all__ = ["CASES", "Conversions"]

CASES = []
for _dataset in pipelines.available():
    try:
        _raw = importlib.import_module(f"tests.raw.{_dataset}")
    except ModuleNotFoundError:
        _raw = None
    for _layout in getattr(_raw, "LAYOUTS", {None: None}):
        CASES.append(pytest.param(_dataset, _layout, id=f"{_dataset}-{_layout}"))


class Conversions:
    """`get(dataset, layout, runner, beam_args)`: (the job's completed process, its output folder); the raw input
    of a case is written once, so that every runner converts the same paths (manifests and quarantines name
    them)."""

    def __init__(self, root: Path):
        self.root = root
        self._raw: dict[tuple[str, str], Path] = {}
        self._done: dict[tuple[str, str, str], tuple[subprocess.CompletedProcess, Path]] = {}

    def raw(self, dataset: str, layout: str) -> Path:
        if (dataset, layout) not in self._raw:
            raw = importlib.import_module(f"tests.raw.{dataset}")
            self._raw[(dataset, layout)] = raw.LAYOUTS[layout](self.root / f"{dataset}-{layout}" / "raw")
        return self._raw[(dataset, layout)]

    def get(
        self, dataset: str, layout: str, runner: str = "default", beam_args: tuple[str, ...] = ()
    ) -> tuple[subprocess.CompletedProcess, Path]:
        key = (dataset, layout, runner)
        if key not in self._done:
            raw = importlib.import_module(f"tests.raw.{dataset}")
            out = self.root / f"{dataset}-{layout}" / f"out-{runner}"
            cmd = [sys.executable, "-m", "pipelines", dataset, "--input", str(self.raw(dataset, layout)), "--output",
                   str(out), "--min-shards", "2", "--max-bad-fraction", "0.5", "--no-progress",
                   *getattr(raw, "EXTRA_ARGS", []), *getattr(raw, "LAYOUT_ARGS", {}).get(layout, [])]  # fmt: skip
            if beam_args:
                cmd += ["--", *beam_args]
            self._done[key] = (subprocess.run(cmd, capture_output=True, text=True, timeout=600), out)
        return self._done[key]
