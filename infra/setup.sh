#!/usr/bin/env bash
# Create (or reuse) the virtual environment and install the project with every extra.
# Used by .ci/run and infra/demo.sh; run it yourself with `bash infra/setup.sh`, then `. .venv/bin/activate`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# torch==2.13.0 is the CPU build that installs here; on a GPU machine install the CUDA build you need.
# DALI: the `dali` extra pulls nvidia-dali-cuda130 (CUDA 13 drivers); for CUDA 12 drivers install
# nvidia-dali-cuda120 instead. DALI's CPU pipelines run without any GPU.
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0" -e ".[beam,dali,torch,gcs,audio,dev]"
