#!/usr/bin/env bash
# Rehearse the GPU check on this machine, with the device forced to cpu, so that the only thing left unknown on
# the GPU machine is the GPU itself.
#
#   bash infra/gpu/rehearse.sh
#
# 1. A virtual environment holding only what the GPU machine has (torch, numpy, pyarrow, fsspec, pillow,
#    scikit-image, pandas, scipy, pytest, pytest-timeout, hypothesis, six, packaging, pyyaml, protobuf: no DALI,
#    no Beam, no s3fs, no moto, no PyAV).
# 2. infra/gpu/stage.sh for this machine's Python, into a temporary folder.
# 3. The device calls, simulated: every part but the last copied to a temporary stage folder, then
#    infra/gpu/check.sh with the last part, `--device cpu --scale small`. Its output and the time it took are
#    printed; the temporary folders are removed (the venv is kept for the next rehearsal).
# STAGED=DIR reuses parts staged before for this Python instead of staging again (4 minutes on 2 cores).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
venv=${REHEARSAL_VENV:-${TMPDIR:-/tmp}/shardkit-gpu-rehearsal-venv}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q torch==2.13.0 numpy pyarrow fsspec pillow scikit-image pandas scipy pytest \
    pytest-timeout hypothesis six packaging pyyaml protobuf
fi
pyver=$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
SECONDS=0
if [ -n "${STAGED:-}" ]; then  # parts staged earlier (for this Python), e.g. STAGE_DIR=/tmp/p bash infra/gpu/stage.sh 3.11
  parts=("$STAGED"/part-*)
else
  STAGE_DIR="$tmp/parts" bash infra/gpu/stage.sh "$pyver"
  echo "== staged in $SECONDS s"
  parts=("$tmp"/parts/part-*)
fi
mkdir -p "$tmp/stage"
for p in "${parts[@]:0:${#parts[@]}-1}"; do cp "$p"/* "$tmp/stage/"; done
SECONDS=0
status=0
STAGE="$tmp/stage" SITE="$tmp/site" PYTHON="$venv/bin/python" \
  bash infra/gpu/check.sh "${parts[-1]}" "$tmp/out" --device cpu --scale small --data "$tmp/data" || status=$?
echo "== check.sh exit $status after $SECONDS s; OUT held: $(ls "$tmp/out" | tr '\n' ' ')"
exit $status
