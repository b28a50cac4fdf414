#!/usr/bin/env bash
# Create (or reuse) the virtual environment and install the project with every extra.
# Used by .ci/run and infra/demo.sh; run it yourself with `bash infra/setup.sh`, then `. .venv/bin/activate`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV and installing the project with every extra: PyTorch (CPU build), Apache Beam,"
  echo "       NVIDIA DALI, PyAV, moto, ... about 2.5 GB; the first time takes 3-10 minutes, later runs seconds"
  "$PYTHON" -m venv "$VENV"
else
  echo "setup: updating $VENV (seconds when nothing changed)"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch==2.13.0 is the CPU build that installs here; on a GPU machine install the CUDA build you need.
# DALI: the `dali` extra pulls nvidia-dali-cuda130 (CUDA 13 drivers); for CUDA 12 drivers install
# nvidia-dali-cuda120 instead. DALI's CPU pipelines run without any GPU.
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0" -e ".[beam,dali,torch,gcs,audio,dask,dev]"
echo "setup: done ($("$VENV/bin/python" -c 'import importlib.metadata as m; print("shardkit", m.version("shardkit"))'))"
