#!/usr/bin/env bash
# The device side of the GPU check: gather the staged parts, unpack DALI, run everything, leave results in OUT.
#
#   bash infra/gpu/check.sh LAST_PART_DIR OUT [options of python -m infra.gpu.run]
#
# The earlier parts were copied to $STAGE (default /tmp/stage) by the calls before this one (infra/gpu/stage.sh
# prints them); this call brings the last. The archive is checked against PARTS before it is unpacked into $SITE
# (default /tmp/shardkit-site), which goes first on PYTHONPATH; its nvJPEG and NPP go on LD_LIBRARY_PATH, where
# DALI and nvImageCodec look for them when they load them. Then `python -m infra.gpu.run OUT ...` does the rest.
set -uo pipefail
[ $# -ge 2 ] || { echo "usage: bash infra/gpu/check.sh LAST_PART_DIR OUT [run options]" >&2; exit 2; }
cd "$(dirname "$0")/../.."
last=$1 out=$2
shift 2
stage=${STAGE:-/tmp/stage} site=${SITE:-/tmp/shardkit-site} python=${PYTHON:-python3}
mkdir -p "$stage" "$out"
cp "$last"/* "$stage"/
SECONDS=0
read -r _ whole size pyver parts < <(head -1 "$stage/PARTS")
missing=$(tail -n +2 "$stage/PARTS" | while read -r sum name; do
  [ -f "$stage/$name" ] || { echo "$name (not copied)"; continue; }
  [ "$(sha256sum "$stage/$name" | cut -d' ' -f1)" = "$sum" ] || echo "$name (sha256 differs)"
done)
if [ -n "$missing" ]; then
  echo "check: staged parts missing or damaged in $stage: $missing ($parts expected)" | tee "$out/check-error.txt" >&2
  exit 3
fi
rm -rf "$site" && mkdir -p "$site"
# Python's own lzma, so that nothing but the Python the machine has is needed
cat "$stage"/site.tar.xz.[0-9][0-9] | "$python" -c "import sys, tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz') as t:
    t.extractall(sys.argv[1], **({'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}))" "$site" ||
  { echo "check: cannot unpack the staged archive into $site" >&2; exit 3; }
echo "unpacked $((size >> 20)) MiB of xz ($pyver, sha256 $whole) into $site in $SECONDS s"
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$site/nvidia/cu13/lib:$site/nvidia/nvimgcodec${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$python" -c "import nvidia.dali as d; print('DALI', d.__version__)" || { echo "check: DALI does not import" >&2; exit 3; }
exec "$python" -m infra.gpu.run "$out" "$@"
