#!/usr/bin/env bash
# The main job on the embedded default (a local folder): set up, make a photo-like sample folder,
# pack it into shards, verify them, list them and draw a preview.
#   bash infra/demo.sh [OUT]        OUT defaults to ./demo-out; an s3:// URL works when AWS_ENDPOINT_URL is set
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-demo-out}"
bash infra/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python -m shards.photos "$WORK/photos" --count 300
python -m shards pack "$WORK/photos" "$OUT/train" --shard-size 4MB --seed 0 --dataset photos-demo
python -m shards verify "$OUT/train"
python -m shards ls "$OUT/train"
python -m shards inspect "$OUT/train"
python -m shards preview "$OUT/train" --out "$WORK/preview.png" -n 16 && cp "$WORK/preview.png" "demo-preview.png"
echo "preview of the first 16 samples: demo-preview.png"
