#!/usr/bin/env bash
# The main job on the embedded default (a local folder): set up, build a small ImageNet in its folder layout from
# photos that packages ship, convert it with the Beam job, verify the shards, and stream them through
# imagenet_dali on the CPU. The split's page (`shards view`) is written to demo-view.html, its path printed.
#   bash infra/demo.sh [OUT]     OUT defaults to ./demo-out; an s3:// URL works when AWS_ENDPOINT_URL is set
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-demo-out}"
bash infra/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python - "$WORK/imagenet" <<'PY'
import sys
from pipelines.imagenet import WNIDS
from infra.bench.pack import make_photo_folder
from infra.photos import source_photos
# one class per photo scikit-image ships: photo i is a crop of source photo i % 8, so with 8 classes every class
# is recognisably one subject (crops, scales and flips of it), and the preview's labels can be checked by eye
classes = tuple(WNIDS[:: len(WNIDS) // len(source_photos())][: len(source_photos())])
n, size = make_photo_folder(sys.argv[1] + "/train", 60_000_000, pattern="{cls}/{cls}_{i}.JPEG", classes=classes)
print(f"sample ImageNet (folder layout): {n} photo-like JPEGs, {size / 1e6:.0f} MB, in {len(classes)} classes: each "
      "class is crops of one photo scikit-image ships (astronaut, coffee, cat, rocket, motorcycle, ...)")
PY
python -m pipelines imagenet --input "$WORK/imagenet" --output "$OUT" --splits train --min-shards 8
python -m shards verify "$OUT/train"
python -m shards preview "$OUT/train" --out demo-preview.png -n 16
python -m shards view "$OUT/train" --out demo-view.html -n 48
echo "the split's page (open it in a browser): $(pwd)/demo-view.html"
python -m loaders.stream imagenet "$OUT/train" --device cpu --batch-size 64 --epochs 3
